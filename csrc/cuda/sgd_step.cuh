// SGD-family kernels (math: csrc/math/sgd.h): the scaled step along the grad or NSGDm's
// momentum, and NSGDm's momentum pass; split by param dtype into generated translation units
// (csrc/cuda/CMakeLists.txt).
#pragma once

#include <type_traits>

#include "cuda/launch.cuh"
#include "cuda/update_pass.cuh"
#include "dispatch/switch.h"
#include "math/master.h"
#include "math/sgd.h"

namespace fusedopt::cuda {

struct SgdArgs {
  PassArgs pass;
  double rho;  // NSGDm's momentum pass only
};

struct SgdLaunch {
  SgdArgs args;
  bool momentum_pass;       // NSGDm's m <- m (1 - rho) + g rho instead of the step
  bool momentum_direction;  // the step goes along the momentum_buffer state
  bool telemetry;
  DType grad_dtype, state_dtype;
  bool master;
  int device;
  uintptr_t stream;
};

/// p <- p - stats[SCALE] * d, d = coef g (or the momentum, coef 1: momentum_step already
/// negated the grads for maximize).
template <class Set, bool kMomentumDirection, bool kTelemetry>
struct SgdOp {
  using P = typename Set::param;
  using G = typename Set::grad;
  using S = typename Set::state;
  static constexpr bool kMaster = Set::master;
  using PL = std::conditional_t<kMaster, float, P>;
  using T = opmath_t<PL>;
  static constexpr int kSums = kTelemetry ? 3 : 0;  // telemetry: only reported
  using Acc = PlainSum;
  static constexpr bool kReadsGrad = !kMomentumDirection || kTelemetry;
  static constexpr int kWidth = vector_width<PL, P, G, S, T>();

  T coef, grad_coef_, scale;
  PL* p;
  P* shadow;
  const G* g;
  const S* mom;

  __device__ explicit SgdOp(const SgdArgs& a)
      : coef(kMomentumDirection ? T(1) : T(grad_coef(a.pass))),
        grad_coef_(T(grad_coef(a.pass))),
        scale(T(a.pass.stats[kSlotScale])) {}

  __device__ void begin_tensor(const TableView&, int64_t) {}

  __device__ bool begin_chunk(const TableView& t, int64_t k, int64_t begin) {
    p = t.pointer<PL>(kMaster ? kRowMaster : kRowParam, k) + begin;
    shadow = kMaster ? t.pointer<P>(kRowParam, k) + begin : nullptr;
    g = kReadsGrad ? t.pointer<const G>(kRowGrad, k) + begin : nullptr;
    mom = kMomentumDirection ? t.pointer<const S>(kRowState0, k) + begin : nullptr;
    constexpr int W = kWidth;
    return vector_aligned<W>(p) && (!kMaster || vector_aligned<W>(shadow)) &&
           (!kReadsGrad || vector_aligned<W>(g)) && (!kMomentumDirection || vector_aligned<W>(mom));
  }

  template <int W>
  __device__ __forceinline__ void apply(int64_t i, Partials<kSums, Acc>& acc) {
    T pv[W], gv[W] = {}, dv[W];
    load_elements<W>(pv, p + i);
    if constexpr (kMaster) reseed_masters<W>(pv, shadow + i);  // Note [master re-seed]
    if constexpr (kReadsGrad) load_elements<W>(gv, g + i);
    if constexpr (kMomentumDirection) {
      load_elements<W>(dv, mom + i);
    } else {
#pragma unroll
      for (int j = 0; j < W; ++j) dv[j] = gv[j];
    }
#pragma unroll
    for (int j = 0; j < W; ++j) {
      const T p_old = pv[j];
      pv[j] = math::scaled_sgd_update(pv[j], dv[j], coef, scale);
      if constexpr (kTelemetry) {
        const T d = pv[j] - p_old;
        const T g_eff = gv[j] * grad_coef_;
        acc.v[0].add(double(d * d));
        acc.v[1].add(double(pv[j] * pv[j]));
        acc.v[2].add(double(g_eff * g_eff));
      }
    }
    store_elements<W>(p + i, pv);
    if constexpr (kMaster) store_elements<W>(shadow + i, pv);
  }
};

/// NSGDm: m <- m (1 - rho) + (coef g) rho, summing m_new^2 per chunk.
template <class Set>
struct MomentumOp {
  using G = typename Set::grad;
  using S = typename Set::state;
  using T = opmath_t<typename Set::param>;
  static constexpr int kSums = 1;
  // sum m^2 feeds the normalizer of every update: compensated in fp64 opmath (Note [fixed tree])
  using Acc = std::conditional_t<std::is_same_v<T, double>, CompensatedSum, PlainSum>;
  static constexpr int kWidth = vector_width<G, S, T>();

  T coef, one_minus_rho, rho;
  const G* g;
  S* m;

  __device__ explicit MomentumOp(const SgdArgs& a)
      : coef(T(grad_coef(a.pass))), one_minus_rho(T(1.0 - a.rho)), rho(T(a.rho)) {}

  __device__ void begin_tensor(const TableView&, int64_t) {}

  __device__ bool begin_chunk(const TableView& t, int64_t k, int64_t begin) {
    g = t.pointer<const G>(kRowGrad, k) + begin;
    m = t.pointer<S>(kRowState0, k) + begin;
    return vector_aligned<kWidth>(g) && vector_aligned<kWidth>(m);
  }

  template <int W>
  __device__ __forceinline__ void apply(int64_t i, Partials<kSums, Acc>& acc) {
    T gv[W], mv[W];
    load_elements<W>(gv, g + i);
    load_elements<W>(mv, m + i);
#pragma unroll
    for (int j = 0; j < W; ++j) {
      mv[j] = math::momentum_update(mv[j], gv[j], coef, one_minus_rho, rho);
      acc.v[0].add(double(mv[j] * mv[j]));
    }
    store_elements<W>(m + i, mv);
  }
};

template <class Set, bool kMomentumDirection, bool kTelemetry>
__global__ void __launch_bounds__(
    kBlockSize,
    (min_blocks_per_sm<typename SgdOp<Set, kMomentumDirection, kTelemetry>::T, kTelemetry>()))
    sgd_kernel(const __grid_constant__ SgdArgs a) {
  if (skipped(a.pass)) {
    return;
  }
  SgdOp<Set, kMomentumDirection, kTelemetry> op(a);
  for_each_chunk(a.pass.table, op, a.pass.partials);
}

template <class Set>
__global__ void __launch_bounds__(kBlockSize,
                                  (min_blocks_per_sm<typename MomentumOp<Set>::T, true>()))
    momentum_kernel(const __grid_constant__ SgdArgs a) {
  if (skipped(a.pass)) {
    return;
  }
  MomentumOp<Set> op(a);
  for_each_chunk(a.pass.table, op, a.pass.partials);
}

template <auto kKernel>
void launch_pass(const SgdLaunch& l) {
  const int64_t grid = grid_for<kKernel, kBlockSize>(l.device, l.args.pass.table.n_chunks());
  launch_kernel<kKernel, kBlockSize>(grid, l.stream, l.args,
                                     l.momentum_pass ? "momentum_kernel" : "sgd_kernel");
}

template <class Set>
void launch_sgd_set(const SgdLaunch& l) {
  if (l.momentum_pass) {
    launch_pass<&momentum_kernel<Set>>(l);
    return;
  }
  dispatch::switch_bool(l.momentum_direction, [&](auto direction) {
    dispatch::switch_bool(l.telemetry, [&](auto telemetry) {
      launch_pass<&sgd_kernel<Set, decltype(direction)::value, decltype(telemetry)::value>>(l);
    });
  });
}

/// Launch the kernel of the storage combination with param type P (instantiated once per P in
/// a generated translation unit). Returns false when the combination is not in the manifest.
template <class P>
bool launch_sgd_for_param(const SgdLaunch& l) {
  return dispatch::switch_dtype_set(dispatch::Code<P>::value, l.grad_dtype, l.state_dtype,
                                    l.master, [&](auto set) {
    using Set = decltype(set);
    if constexpr (std::is_same_v<typename Set::param, P>) {
      launch_sgd_set<Set>(l);
    }
  });
}

}  // namespace fusedopt::cuda
