// The Adam family's update kernel (math: csrc/math/adam.h), one instantiation per storage
// combination x AdamKind x Decay x telemetry. The instantiations are split by param dtype into
// generated translation units (csrc/cuda/CMakeLists.txt), so they compile in parallel.
#pragma once

#include <type_traits>

#include "cuda/launch.cuh"
#include "cuda/update_pass.cuh"
#include "dispatch/switch.h"
#include "math/adam.h"
#include "math/master.h"

namespace fusedopt::cuda {

/// Everything an Adam-family kernel needs, in fp64 as the CPU core's adam_step computes it
/// (csrc/cpu/adam_step.cpp): the kernel casts to opmath.
struct AdamArgs {
  PassArgs pass;  // pass.lr: the learning rate
  double beta1, beta2, eps, weight_decay;
  bool use_abc;          // AdamL: a, b, c from stats[ABC:ABC+3]
  bool eadam;            // no outer eps (b = 0)
  bool shifts_v;         // adabelief, eadam: v += eps (stored)
  bool bias_correction;  // false for AdamD and rmsprop
  bool decoupled;        // p *= 1 - lr * wd (AdamW) with wd != 0
};

/// Per-tensor scalars an Adam kernel reads (Note [tensor scalars]): step size, sqrt(bc2), decay.
constexpr int kAdamScalars = 3;

/// One launch: the arguments and the modes the host switch picks an instantiation by.
struct AdamLaunch {
  AdamArgs args;
  math::AdamKind kind;
  math::Decay decay;
  bool telemetry;
  DType grad_dtype, state_dtype;
  bool master;
  int device;
  uintptr_t stream;
};

template <class Set, math::AdamKind K, math::Decay D, bool kTelemetry>
struct AdamOp {
  using P = typename Set::param;
  using G = typename Set::grad;
  using S = typename Set::state;
  static constexpr bool kMaster = Set::master;
  using PL = std::conditional_t<kMaster, float, P>;  // what the update loads and stores
  using T = opmath_t<PL>;
  static constexpr bool kHasM = K != math::AdamKind::kRmsprop;
  static constexpr bool kHasVmax = K == math::AdamKind::kAmsgrad;
  static constexpr int kSums = kTelemetry ? 3 : 0;  // telemetry: only reported
  using Acc = PlainSum;
  static constexpr int kWidth = vector_width<PL, P, G, S, T>();

  const AdamArgs& a;
  math::AdamCallScalars<T> cs;
  math::AdamTensorScalars<T> ts;
  PL* p;
  P* shadow;
  const G* g;
  S *m, *v, *vmax;

  __device__ explicit AdamOp(const AdamArgs& args) : a(args) {
    const double* stats = a.pass.stats;
    // AdamL (use_abc): v += a, denominator + b, step size * c (csrc/math/adam.h).
    const double shift = a.use_abc ? stats[kSlotAbc] : 0.0;
    const double b = a.use_abc ? stats[kSlotAbc + 1] : (a.eadam ? 0.0 : a.eps);
    cs = math::adam_call_scalars<T>({grad_coef(a.pass), a.weight_decay, a.beta1, a.beta2,
                                     a.shifts_v ? a.eps : shift, b});
  }

  __device__ void begin_tensor(const TableView&, int64_t k) {
    const double* s64 = a.pass.scalars + k * kAdamScalars;
    ts = {T(s64[0]), T(s64[1]), T(s64[2])};
  }

  __device__ bool begin_chunk(const TableView& t, int64_t k, int64_t begin) {
    p = t.pointer<PL>(kMaster ? kRowMaster : kRowParam, k) + begin;
    shadow = kMaster ? t.pointer<P>(kRowParam, k) + begin : nullptr;
    g = t.pointer<const G>(kRowGrad, k) + begin;
    m = kHasM ? t.pointer<S>(kRowState0, k) + begin : nullptr;
    v = t.pointer<S>(kRowState0 + 1, k) + begin;
    vmax = kHasVmax ? t.pointer<S>(kRowState0 + 2, k) + begin : nullptr;
    constexpr int W = kWidth;
    return vector_aligned<W>(p) && (!kMaster || vector_aligned<W>(shadow)) &&
           vector_aligned<W>(g) && (!kHasM || vector_aligned<W>(m)) && vector_aligned<W>(v) &&
           (!kHasVmax || vector_aligned<W>(vmax));
  }

  template <int W>
  __device__ __forceinline__ void apply(int64_t i, Partials<kSums, Acc>& acc) {
    T pv[W], gv[W], mv[W] = {}, vv[W], vmaxv[W] = {};
    load_elements<W>(pv, p + i);
    if constexpr (kMaster) reseed_masters<W>(pv, shadow + i);  // Note [master re-seed]
    load_elements<W>(gv, g + i);
    if constexpr (kHasM) load_elements<W>(mv, m + i);
    load_elements<W>(vv, v + i);
    if constexpr (kHasVmax) load_elements<W>(vmaxv, vmax + i);
#pragma unroll
    for (int j = 0; j < W; ++j) {
      const T p_old = pv[j];
      math::adam_update<K, D>(pv[j], gv[j], mv[j], vv[j], vmaxv[j], cs, ts);
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
    if constexpr (kHasM) store_elements<W>(m + i, mv);
    store_elements<W>(v + i, vv);
    if constexpr (kHasVmax) store_elements<W>(vmax + i, vmaxv);
  }
};

template <class Set, math::AdamKind K, math::Decay D, bool kTelemetry>
__global__ void __launch_bounds__(
    kBlockSize, (min_blocks_per_sm<typename AdamOp<Set, K, D, kTelemetry>::T, kTelemetry>()))
    adam_kernel(const __grid_constant__ AdamArgs a) {
  if (skipped(a.pass)) {
    return;
  }
  AdamOp<Set, K, D, kTelemetry> op(a);
  for_each_chunk(a.pass.table, op, a.pass.partials);
}

template <class Set>
void launch_adam_set(const AdamLaunch& l) {
  using math::AdamKind;
  using math::Decay;
  dispatch::switch_enum<AdamKind, AdamKind::kAdam, AdamKind::kAmsgrad, AdamKind::kAdabelief,
                        AdamKind::kRmsprop, AdamKind::kYogi>(l.kind, [&](auto kind) {
    dispatch::switch_enum<Decay, Decay::kDecoupled, Decay::kCoupled>(l.decay, [&](auto decay) {
      dispatch::switch_bool(l.telemetry, [&](auto telemetry) {
        constexpr auto kernel = &adam_kernel<Set, decltype(kind)::value, decltype(decay)::value,
                                             decltype(telemetry)::value>;
        const int64_t grid = grid_for<kernel, kBlockSize>(l.device, l.args.pass.table.n_chunks());
        launch_kernel<kernel, kBlockSize>(grid, l.stream, l.args, "adam_kernel");
      });
    });
  });
}

/// Launch the kernel of the storage combination with param type P (one generated translation
/// unit per P instantiates this). Returns false when the combination is not in the manifest.
template <class P>
bool launch_adam_for_param(const AdamLaunch& l) {
  return dispatch::switch_dtype_set(dispatch::Code<P>::value, l.grad_dtype, l.state_dtype,
                                    l.master, [&](auto set) {
    using Set = decltype(set);
    if constexpr (std::is_same_v<typename Set::param, P>) {
      launch_adam_set<Set>(l);
    }
  });
}

}  // namespace fusedopt::cuda
