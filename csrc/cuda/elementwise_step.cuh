// The update kernel of every element-wise algorithm (math/elementwise.h), one instantiation per
// storage combination x algorithm x telemetry, split by param dtype into generated translation
// units (csrc/cuda/sources.cmake). The algorithm supplies only its element update; loads,
// master re-seed, stores and telemetry are written here once for all of them.
#pragma once

#include <type_traits>

#include "cuda/launch.cuh"
#include "cuda/update_pass.cuh"
#include "dispatch/switch.h"
#include "math/algorithms.h"
#include "math/master.h"

namespace fusedopt::cuda {

/// Everything an element-wise kernel needs: the pass, the algorithm's code and its fp64
/// hyperparameters (read by the scalars launch, Note [tensor scalars]).
struct ElementwiseArgs {
  PassArgs pass;  // pass.lr: the learning rate
  int algorithm;  // index in FUSEDOPT_ELEMENTWISE_ALGORITHMS
  double hyper[math::kMaxHyper];
};

/// One launch: the arguments and the modes the host switch picks an instantiation by.
struct ElementwiseLaunch {
  ElementwiseArgs args;
  bool telemetry;
  DType grad_dtype, state_dtype;
  bool master;
  int device;
  uintptr_t stream;
};

template <class Set, class A, bool kTelemetry>
struct ElementwiseOp {
  using P = typename Set::param;
  using G = typename Set::grad;
  using S = typename Set::state;
  static constexpr bool kMaster = Set::master;
  using PL = std::conditional_t<kMaster, float, P>;  // what the update loads and stores
  using T = opmath_t<PL>;
  static constexpr int K = A::kStates;
  static constexpr int kStreams = 2 + K + (kMaster ? 1 : 0);  // param, grad, states, master
  static constexpr int kSums = kTelemetry ? 3 : 0;  // telemetry: only reported
  using Acc = PlainSum;
  static constexpr int kWidth = vector_width<PL, P, G, S, T>();

  const ElementwiseArgs& a;
  T coef;
  T s[A::kScalars];  // this tensor's scalars in opmath (begin_tensor)
  PL* p;
  P* shadow;
  const G* g;
  S* st[K];

  __device__ explicit ElementwiseOp(const ElementwiseArgs& args)
      : a(args), coef(T(grad_coef(args.pass))) {}

  __device__ void begin_tensor(const TableView&, int64_t k) {
    const double* s64 = a.pass.scalars + k * kMaxScalarsPerTensor;
#pragma unroll
    for (int j = 0; j < A::kScalars; ++j) s[j] = T(s64[j]);
  }

  __device__ bool begin_chunk(const TableView& t, int64_t k, int64_t begin) {
    constexpr int W = kWidth;
    p = t.pointer<PL>(kMaster ? kRowMaster : kRowParam, k) + begin;
    shadow = kMaster ? t.pointer<P>(kRowParam, k) + begin : nullptr;
    g = t.pointer<const G>(kRowGrad, k) + begin;
    bool aligned = vector_aligned<W>(p) && (!kMaster || vector_aligned<W>(shadow)) &&
                   vector_aligned<W>(g);
#pragma unroll
    for (int j = 0; j < K; ++j) {
      st[j] = t.pointer<S>(kRowState0 + j, k) + begin;
      aligned = aligned && vector_aligned<W>(st[j]);
    }
    return aligned;
  }

  template <int W>
  __device__ __forceinline__ void apply(int64_t i, Partials<kSums, Acc>& acc) {
    T pv[W], gv[W], sv[K][W];
    load_elements<W>(pv, p + i);
    if constexpr (kMaster) reseed_masters<W>(pv, shadow + i);  // Note [master re-seed]
    load_elements<W>(gv, g + i);
#pragma unroll
    for (int j = 0; j < K; ++j) load_elements<W>(sv[j], st[j] + i);
#pragma unroll
    for (int e = 0; e < W; ++e) {
      const T p_old = pv[e];
      const T g_eff = gv[e] * coef;
      T state[K];
#pragma unroll
      for (int j = 0; j < K; ++j) state[j] = sv[j][e];
      A::template update<T>(pv[e], g_eff, state, s);
#pragma unroll
      for (int j = 0; j < K; ++j) sv[j][e] = state[j];
      if constexpr (kTelemetry) {
        const T d = pv[e] - p_old;
        acc.v[0].add(double(d * d));
        acc.v[1].add(double(pv[e] * pv[e]));
        acc.v[2].add(double(g_eff * g_eff));
      }
    }
    store_elements<W>(p + i, pv);
    if constexpr (kMaster) store_elements<W>(shadow + i, pv);
#pragma unroll
    for (int j = 0; j < K; ++j) store_elements<W>(st[j] + i, sv[j]);
  }
};

template <class Set, class A, bool kTelemetry, class Op = ElementwiseOp<Set, A, kTelemetry>>
__global__ void __launch_bounds__(
    kBlockSize, (min_blocks_per_sm<typename Op::T, kTelemetry, Op::kStreams>()))
    elementwise_kernel(const __grid_constant__ ElementwiseArgs a) {
  if (skipped(a.pass)) {
    return;
  }
  ElementwiseOp<Set, A, kTelemetry> op(a);
  for_each_chunk(a.pass.table, op, a.pass.partials);
}

template <class Set>
void launch_elementwise_set(const ElementwiseLaunch& l) {
  dispatch::switch_bool(l.telemetry, [&](auto telemetry) {
    int index = 0;
#define FUSEDOPT_LAUNCH(A)                                                                   \
  if (l.args.algorithm == index++) {                                                         \
    constexpr auto kernel = &elementwise_kernel<Set, math::A, decltype(telemetry)::value>;   \
    const int64_t grid = grid_for<kernel, kBlockSize>(l.device, l.args.pass.table.n_chunks()); \
    launch_kernel<kernel, kBlockSize>(grid, l.stream, l.args, "elementwise_kernel");         \
  }
    FUSEDOPT_ELEMENTWISE_ALGORITHMS(FUSEDOPT_LAUNCH)
#undef FUSEDOPT_LAUNCH
  });
}

/// Launch the kernel of the storage combination with param type P (one generated translation
/// unit per P instantiates this). Returns false when the combination is not in the manifest.
template <class P>
bool launch_elementwise_for_param(const ElementwiseLaunch& l) {
  return dispatch::switch_dtype_set(dispatch::Code<P>::value, l.grad_dtype, l.state_dtype,
                                    l.master, [&](auto set) {
    using Set = decltype(set);
    if constexpr (std::is_same_v<typename Set::param, P>) {
      launch_elementwise_set<Set>(l);
    }
  });
}

}  // namespace fusedopt::cuda
