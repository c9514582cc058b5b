// elementwise_step: the update call of every element-wise algorithm (contract:
// elementwise_step_, backends/__init__.py): the per-tensor scalars launch, one update launch
// over every chunk of the bucket, then the finish launch (Note [finish]).
#include <stdexcept>
#include <string>

#include "cuda/dtype_check.h"
#include "cuda/elementwise_step.cuh"
#include "cuda/finish.cuh"

namespace fusedopt::cuda {

// Instantiated in the generated elementwise_step_<dtype>.cu files (csrc/cuda/sources.cmake).
extern template bool launch_elementwise_for_param<float>(const ElementwiseLaunch&);
extern template bool launch_elementwise_for_param<double>(const ElementwiseLaunch&);
extern template bool launch_elementwise_for_param<bf16_t>(const ElementwiseLaunch&);
extern template bool launch_elementwise_for_param<fp16_t>(const ElementwiseLaunch&);

namespace {

/// Note [tensor scalars]: algorithm A's scalars() of every tensor, in fp64 as the CPU core
/// computes them on the host (csrc/cpu/elementwise_step.cpp), from the device's lr and steps.
/// One kernel per algorithm: a single kernel holding every algorithm's scalars() calls libdevice's
/// pow from so many sites that ptxas keeps it out of line, and its out-of-line copy spilled
/// (4 bytes on sm_90 once ADOPT's t^(1/4) joined Adan's and Schedule-Free's powers).
template <class A>
__global__ void __launch_bounds__(kFinishBlockSize)
    elementwise_scalars_kernel(const __grid_constant__ ElementwiseArgs a) {
  const double lr = read_lr(a.pass.lr);
  const TableView& t = a.pass.table;
  for (int64_t k = blockIdx.x * int64_t(kFinishBlockSize) + threadIdx.x; k < t.n_tensors();
       k += int64_t(gridDim.x) * kFinishBlockSize) {
    A::scalars(next_step(t, k), lr, a.hyper, a.pass.scalars + k * kMaxScalarsPerTensor);
  }
}

/// Launch the scalars kernel of the call's algorithm.
void launch_scalars(const ElementwiseLaunch& l, int64_t n_tensors) {
  int index = 0;
#define FUSEDOPT_SCALARS_LAUNCH(A)                                                       \
  if (l.args.algorithm == index++) {                                                     \
    launch_kernel<&elementwise_scalars_kernel<math::A>, kFinishBlockSize>(               \
        scalar_grid(n_tensors), l.stream, l.args, "elementwise_scalars_kernel");         \
  }
  FUSEDOPT_ELEMENTWISE_ALGORITHMS(FUSEDOPT_SCALARS_LAUNCH)
#undef FUSEDOPT_SCALARS_LAUNCH
}

}  // namespace

void elementwise_step(const Table& t, double* stats, const ElementwiseCall& call,
                      uintptr_t stream) {
  elementwise_info(call);  // checks the code and the hyperparameter count
  check_dtypes(t);
  ElementwiseLaunch l{};
  l.args.pass = {view_of(t), stats, t.partials, t.scalars, call.use_prologue, call.maximize,
                 call.lr};
  l.args.algorithm = call.algorithm;
  for (int h = 0; h < math::kMaxHyper; ++h) l.args.hyper[h] = call.hyper[h];
  l.telemetry = call.telemetry;
  l.grad_dtype = t.grad_dtype;
  l.state_dtype = t.state_dtype;
  l.master = t.master;
  l.device = t.device;
  l.stream = stream;

  if (t.n_chunks > 0) {
    DeviceGuard guard(t.device);
    launch_scalars(l, t.n_tensors);
    dispatch::switch_dtype(t.param_dtype, [&](auto tag) {
      launch_elementwise_for_param<typename decltype(tag)::type>(l);
    });
  }
  launch_finish({view_of(t), stats, t.partials, call.telemetry ? 3 : 0, int(kSlotUpdateSq),
                 /*advance_steps=*/true, call.use_prologue, t.param_dtype == DType::kFloat64,
                 call.lr},
                t.device, stream);
}

}  // namespace fusedopt::cuda
