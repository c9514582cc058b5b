// Adam-family chunk loops (math: csrc/math/adam.h), one instantiation per storage combination
// x AdamKind x Decay x telemetry, compiled once per ISA.
#include "cpu/kernel_args.h"
#include "cpu/kernels/isa_namespace.h"
#include "cpu/kernels/update_loop.h"
#include "cpu/parallel.h"
#include "dispatch/switch.h"
#include "math/adam.h"
#include "math/master.h"

namespace fusedopt::cpu::FUSEDOPT_ISA {
namespace {

using math::AdamKind;
using math::Decay;

template <class Set, AdamKind K, Decay D, bool kTelemetry>
void adam_chunks(const AdamLoop& a) {
  using P = typename Set::param;
  using G = typename Set::grad;
  using S = typename Set::state;
  constexpr bool kMaster = Set::master;
  using PL = std::conditional_t<kMaster, float, P>;  // what the update loads and stores
  using T = opmath_t<PL>;
  constexpr bool kHasM = K != AdamKind::kRmsprop;
  constexpr bool kHasVmax = K == AdamKind::kAmsgrad;

  const TableView& tv = a.table;
  const math::AdamCallScalars<T> cs = math::adam_call_scalars<T>(a.call);
  parallel_chunks(tv.chunks, a.nthreads, [&](int64_t c) {
    const Chunk ch = tv.chunks.chunks[c];
    const int64_t k = ch.tensor, i0 = ch.begin, n = ch.end - ch.begin;
    PL* p = static_cast<PL*>(kMaster ? tv.master[k] : tv.param[k]) + i0;
    P* shadow = kMaster ? static_cast<P*>(tv.param[k]) + i0 : nullptr;
    const G* g = static_cast<const G*>(tv.grad[k]) + i0;
    S* m = kHasM ? static_cast<S*>(tv.state[0][k]) + i0 : nullptr;
    S* v = static_cast<S*>(tv.state[1][k]) + i0;
    S* vmax = kHasVmax ? static_cast<S*>(tv.state[2][k]) + i0 : nullptr;
    const math::AdamTensorScalars<double>& t64 = a.per_tensor[k];
    const math::AdamTensorScalars<T> ts{T(t64.step_size), T(t64.bc2_sqrt), T(t64.decay)};

    // One element: load, update in opmath, store; returns old p, new p and coef * g.
    // scalars by value: Note [scalars by value] (update_loop.h)
    auto update = [&, cs, ts](int64_t i, T& p_old, T& p_new, T& g_eff) FUSEDOPT_INLINE_LAMBDA {
      T pv = load<T>(p[i]);
      if constexpr (kMaster) pv = math::reseed_master(pv, shadow[i]);  // Note [master re-seed]
      const T gv = load<T>(g[i]);
      T mv = T(0), vmaxv = T(0);
      if constexpr (kHasM) mv = load<T>(m[i]);
      T vv = load<T>(v[i]);
      if constexpr (kHasVmax) vmaxv = load<T>(vmax[i]);
      p_old = pv;
      math::adam_update<K, D>(pv, gv, mv, vv, vmaxv, cs, ts);
      p[i] = narrow<PL>(pv);
      if constexpr (kMaster) shadow[i] = narrow<P>(pv);
      if constexpr (kHasM) m[i] = narrow<S>(mv);
      v[i] = narrow<S>(vv);
      if constexpr (kHasVmax) vmax[i] = narrow<S>(vmaxv);
      p_new = pv;
      g_eff = gv * cs.coef;
    };

    update_elements<kTelemetry, T>(n, a.partials + kTelemetrySums * c, update);
  });
}

}  // namespace

void adam_loop(const AdamLoop& a) {
  const TableView& t = a.table;
  dispatch::switch_dtype_set(t.param_dtype, t.grad_dtype, t.state_dtype, t.master != nullptr,
                             [&](auto set) {
    dispatch::switch_enum<AdamKind, AdamKind::kAdam, AdamKind::kAmsgrad, AdamKind::kAdabelief,
                          AdamKind::kRmsprop, AdamKind::kYogi>(a.kind, [&](auto kind) {
      dispatch::switch_enum<Decay, Decay::kDecoupled, Decay::kCoupled>(a.decay, [&](auto decay) {
        dispatch::switch_bool(a.telemetry, [&](auto telemetry) {
          adam_chunks<decltype(set), decltype(kind)::value, decltype(decay)::value,
                      decltype(telemetry)::value>(a);
        });
      });
    });
  });
}

}  // namespace fusedopt::cpu::FUSEDOPT_ISA
