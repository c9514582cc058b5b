// grad_prologue: the norm pass of docs/algorithms.md#prologue (contract: grad_prologue_),
// writing the five slots of a prologue region (Note [prologue region]) as a deterministic
// two-stage reduction:
//
//   1. norm_partials_kernel (persistent grid over the grads' chunks, any mix of dtypes): per
//      chunk, the fp64 sum of (g * inv)^2 in opmath (csrc/math/prologue.h; compensated when
//      the opmath is fp64) and the count of non-finite elements, into fixed per-chunk slots
//      (Note [persistent grid]);
//   2. norm_finish_kernel (one block): the slots summed (compensated) in the fixed order of
//      Note [fixed tree], the sum rounded to opmath as the reference's (csrc/cpu/grad_prologue.cpp
//      does the same), then norm, found_inf (OR the GradScaler's flag), clip and coef in fp64
//      by math::finish_prologue, written to stats[region:region+5].
//
// Without compute_norm only stage 2 runs, over no chunks: sq = 0, clip = 1, coef = 1/scale.
#include <type_traits>

#include "cuda/api.h"
#include "cuda/launch.cuh"
#include "dispatch/switch.h"
#include "fusedopt/stats.h"
#include "math/prologue.h"

namespace fusedopt::cuda {
namespace {

constexpr int kNormSums = 2;  // per chunk: sum of squares, number of non-finite elements

struct NormArgs {
  TableView table;
  double* partials;         // kNormSums per chunk
  const float* grad_scale;  // nullptr without AMP
};

/// The partial sums of one chunk of grads whose dtype is known only at run time: the dtype is
/// read once per tensor (block-uniform), and each access switches on it.
template <class T>
struct NormOp {
  static constexpr int kSums = kNormSums;
  // the norm feeds clipping: compensated in fp64 opmath (Note [fixed tree]); in fp32 opmath the
  // sum is rounded to fp32 at the end, far above the fp64 error
  using Acc = std::conditional_t<std::is_same_v<T, double>, CompensatedSum, PlainSum>;
  static constexpr int kWidth = vector_width<T>();  // grads of any dtype at most as wide as T
  T inv;
  DType dtype = DType::kFloat32;  // of the current tensor (begin_tensor)
  const void* g = nullptr;        // its chunk (begin_chunk)

  __device__ explicit NormOp(const NormArgs& a)
      : inv(T(a.grad_scale != nullptr ? 1.0 / double(*a.grad_scale) : 1.0)) {}

  __device__ void begin_tensor(const TableView& t, int64_t k) {
    dtype = DType(t.row(kRowDtype, k));
  }

  __device__ bool begin_chunk(const TableView& t, int64_t k, int64_t begin) {
    bool aligned = false;
    dispatch_grad([&](auto tag) {
      using G = typename decltype(tag)::type;
      g = t.pointer<const G>(kRowGrad, k) + begin;
      aligned = vector_aligned<kWidth>(static_cast<const G*>(g));
    });
    return aligned;
  }

  template <int W, class G>
  __device__ __forceinline__ void accumulate(int64_t i, Partials<kSums, Acc>& acc) const {
    G raw[W];
    load_words<int(sizeof(G)) * W>(raw, static_cast<const G*>(g) + i);
#pragma unroll
    for (int j = 0; j < W; ++j) {
      acc.v[0].add(double(math::unscaled_square(load<T>(raw[j]), inv)));
      acc.v[1].add(is_nonfinite(raw[j]) ? 1.0 : 0.0);
    }
  }

  template <int W>
  __device__ __forceinline__ void apply(int64_t i, Partials<kSums, Acc>& acc) {
    dispatch_grad([&](auto tag) { accumulate<W, typename decltype(tag)::type>(i, acc); });
  }

  /// f(Tag<storage type>) for this tensor's dtype. fp64 grads make the whole pass fp64
  /// (opmath64), so the fp32 instantiation has no fp64 case.
  template <class F>
  __device__ __forceinline__ void dispatch_grad(F&& f) const {
    switch (dtype) {
      case DType::kFloat32: f(dispatch::Tag<float>{}); break;
      case DType::kFloat16: f(dispatch::Tag<fp16_t>{}); break;
      case DType::kBFloat16: f(dispatch::Tag<bf16_t>{}); break;
      case DType::kFloat64:
        if constexpr (std::is_same_v<T, double>) f(dispatch::Tag<double>{});
        break;
    }
  }
};

template <class T>
__global__ void __launch_bounds__(kBlockSize, (min_blocks_per_sm<T, true>()))
    norm_partials_kernel(const __grid_constant__ NormArgs a) {
  NormOp<T> op(a);
  for_each_chunk(a.table, op, a.partials);
}

template <class T>
void launch_norm_partials(const NormArgs& args, int device, uintptr_t stream) {
  constexpr auto kernel = &norm_partials_kernel<T>;
  const int64_t grid = grid_for<kernel, kBlockSize>(device, args.table.n_chunks());
  launch_kernel<kernel, kBlockSize>(grid, stream, args, "norm_partials_kernel");
}

struct NormFinishArgs {
  const double* partials;
  int64_t n_chunks;
  double* region;           // stats + region
  const float* grad_scale;  // nullptr without AMP
  const float* found_inf;   // nullptr without a GradScaler
  double max_norm;          // < 0: no clipping
  bool opmath64;
};

__global__ void __launch_bounds__(kFinishBlockSize)
    norm_finish_kernel(const __grid_constant__ NormFinishArgs a) {
  Partials<kNormSums, CompensatedSum> acc;
  for (int64_t c = threadIdx.x; c < a.n_chunks; c += kFinishBlockSize) {
    acc.v[0].add(a.partials[c * kNormSums + 0]);
    acc.v[1].add(a.partials[c * kNormSums + 1]);
  }
  const Partials<kNormSums, CompensatedSum> total = block_sum<kFinishBlockSize>(acc);
  if (threadIdx.x != 0) {
    return;
  }
  const double inv = a.grad_scale != nullptr ? 1.0 / double(*a.grad_scale) : 1.0;
  const bool found_inf =
      total.v[1].value() != 0.0 || (a.found_inf != nullptr && *a.found_inf != 0.0f);
  const double sq = a.opmath64 ? total.v[0].value() : double(float(total.v[0].value()));
  const math::PrologueScalars r = math::finish_prologue(sq, found_inf, inv, a.max_norm);
  a.region[kRegionSq] = r.sq;
  a.region[kRegionNorm] = r.norm;
  a.region[kRegionFoundInf] = r.found_inf;
  a.region[kRegionClipCoef] = r.clip_coef;
  a.region[kRegionCoef] = r.coef;
}

}  // namespace

void grad_prologue(const Table& grads, double* stats, const PrologueCall& call, bool opmath64,
                   uintptr_t stream) {
  DeviceGuard guard(grads.device);
  const int64_t n_chunks = call.compute_norm ? grads.n_chunks : 0;
  if (n_chunks > 0) {
    const NormArgs args{view_of(grads), grads.partials, call.grad_scale};
    if (opmath64) {
      launch_norm_partials<double>(args, grads.device, stream);
    } else {
      launch_norm_partials<float>(args, grads.device, stream);
    }
  }
  const NormFinishArgs finish{grads.partials, n_chunks,        stats + call.region,
                              call.grad_scale, call.found_inf,
                              call.compute_norm ? call.max_norm : -1.0, opmath64};
  launch_kernel<&norm_finish_kernel, kFinishBlockSize>(1, stream, finish, "norm_finish_kernel");
}

}  // namespace fusedopt::cuda
