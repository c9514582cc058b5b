// Coordinate-wise Adagrad's update kernel (math: csrc/math/adagrad.h), one instantiation per
// storage combination x coupled decay x telemetry, split by param dtype into generated
// translation units (csrc/cuda/CMakeLists.txt).
#pragma once

#include <type_traits>

#include "cuda/launch.cuh"
#include "cuda/update_pass.cuh"
#include "dispatch/switch.h"
#include "math/adagrad.h"
#include "math/master.h"

namespace fusedopt::cuda {

struct AdagradArgs {
  PassArgs pass;  // pass.lr: the learning rate
  double lr_decay, eps, weight_decay;
};

struct AdagradLaunch {
  AdagradArgs args;
  bool l2;  // coupled weight decay (wd != 0)
  bool telemetry;
  DType grad_dtype, state_dtype;
  bool master;
  int device;
  uintptr_t stream;
};

template <class Set, bool kL2, bool kTelemetry>
struct AdagradOp {
  using P = typename Set::param;
  using G = typename Set::grad;
  using S = typename Set::state;
  static constexpr bool kMaster = Set::master;
  using PL = std::conditional_t<kMaster, float, P>;
  using T = opmath_t<PL>;
  static constexpr int kSums = kTelemetry ? 3 : 0;  // telemetry: only reported
  using Acc = PlainSum;
  static constexpr int kWidth = vector_width<PL, P, G, S, T>();

  const AdagradArgs& a;
  math::AdagradCallScalars<T> cs;
  T clr;
  PL* p;
  P* shadow;
  const G* g;
  S* s;

  __device__ explicit AdagradOp(const AdagradArgs& args)
      : a(args), cs{T(grad_coef(a.pass)), T(a.weight_decay), T(a.eps)} {}

  __device__ void begin_tensor(const TableView&, int64_t k) { clr = T(a.pass.scalars[k]); }

  __device__ bool begin_chunk(const TableView& t, int64_t k, int64_t begin) {
    p = t.pointer<PL>(kMaster ? kRowMaster : kRowParam, k) + begin;
    shadow = kMaster ? t.pointer<P>(kRowParam, k) + begin : nullptr;
    g = t.pointer<const G>(kRowGrad, k) + begin;
    s = t.pointer<S>(kRowState0, k) + begin;
    constexpr int W = kWidth;
    return vector_aligned<W>(p) && (!kMaster || vector_aligned<W>(shadow)) &&
           vector_aligned<W>(g) && vector_aligned<W>(s);
  }

  template <int W>
  __device__ __forceinline__ void apply(int64_t i, Partials<kSums, Acc>& acc) {
    T pv[W], gv[W], sv[W];
    load_elements<W>(pv, p + i);
    if constexpr (kMaster) reseed_masters<W>(pv, shadow + i);  // Note [master re-seed]
    load_elements<W>(gv, g + i);
    load_elements<W>(sv, s + i);
#pragma unroll
    for (int j = 0; j < W; ++j) {
      const T p_old = pv[j];
      math::adagrad_update<kL2>(pv[j], gv[j], sv[j], cs, clr);
      if constexpr (kTelemetry) {
        const T d = pv[j] - p_old;
        const T g_eff = gv[j] * cs.coef;
        acc.v[0].add(double(d * d));
        acc.v[1].add(double(pv[j] * pv[j]));
        acc.v[2].add(double(g_eff * g_eff));
      }
    }
    store_elements<W>(p + i, pv);
    if constexpr (kMaster) store_elements<W>(shadow + i, pv);
    store_elements<W>(s + i, sv);
  }
};

template <class Set, bool kL2, bool kTelemetry>
__global__ void __launch_bounds__(
    kBlockSize, (min_blocks_per_sm<typename AdagradOp<Set, kL2, kTelemetry>::T, kTelemetry>()))
    adagrad_kernel(const __grid_constant__ AdagradArgs a) {
  if (skipped(a.pass)) {
    return;
  }
  AdagradOp<Set, kL2, kTelemetry> op(a);
  for_each_chunk(a.pass.table, op, a.pass.partials);
}

template <class Set>
void launch_adagrad_set(const AdagradLaunch& l) {
  dispatch::switch_bool(l.l2, [&](auto l2) {
    dispatch::switch_bool(l.telemetry, [&](auto telemetry) {
      constexpr auto kernel =
          &adagrad_kernel<Set, decltype(l2)::value, decltype(telemetry)::value>;
      const int64_t grid = grid_for<kernel, kBlockSize>(l.device, l.args.pass.table.n_chunks());
      launch_kernel<kernel, kBlockSize>(grid, l.stream, l.args, "adagrad_kernel");
    });
  });
}

/// Launch the kernel of the storage combination with param type P (instantiated once per P in
/// a generated translation unit). Returns false when the combination is not in the manifest.
template <class P>
bool launch_adagrad_for_param(const AdagradLaunch& l) {
  return dispatch::switch_dtype_set(dispatch::Code<P>::value, l.grad_dtype, l.state_dtype,
                                    l.master, [&](auto set) {
    using Set = decltype(set);
    if constexpr (std::is_same_v<typename Set::param, P>) {
      launch_adagrad_set<Set>(l);
    }
  });
}

}  // namespace fusedopt::cuda
