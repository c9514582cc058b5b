// Adagrad chunk loops (math: csrc/math/adagrad.h), one instantiation per storage combination x
// coupled decay x telemetry, compiled once per ISA.
#include "cpu/kernel_args.h"
#include "cpu/kernels/isa_namespace.h"
#include "cpu/kernels/update_loop.h"
#include "cpu/parallel.h"
#include "dispatch/switch.h"
#include "math/adagrad.h"
#include "math/master.h"

namespace fusedopt::cpu::FUSEDOPT_ISA {
namespace {

template <class Set, bool kL2, bool kTelemetry>
void adagrad_chunks(const AdagradLoop& a) {
  using P = typename Set::param;
  using G = typename Set::grad;
  using S = typename Set::state;
  constexpr bool kMaster = Set::master;
  using PL = std::conditional_t<kMaster, float, P>;
  using T = opmath_t<PL>;

  const TableView& tv = a.table;
  const math::AdagradCallScalars<T> cs{T(a.call.coef), T(a.call.wd), T(a.call.eps)};
  parallel_chunks(tv.chunks, a.nthreads, [&](int64_t c) {
    const Chunk ch = tv.chunks.chunks[c];
    const int64_t k = ch.tensor, i0 = ch.begin, n = ch.end - ch.begin;
    PL* p = static_cast<PL*>(kMaster ? tv.master[k] : tv.param[k]) + i0;
    P* shadow = kMaster ? static_cast<P*>(tv.param[k]) + i0 : nullptr;
    const G* g = static_cast<const G*>(tv.grad[k]) + i0;
    S* s = static_cast<S*>(tv.state[0][k]) + i0;
    const T clr = T(a.clr[k]);

    // scalars by value: Note [scalars by value] (update_loop.h)
    auto update = [&, cs, clr](int64_t i, T& p_old, T& p_new, T& g_eff) FUSEDOPT_INLINE_LAMBDA {
      T pv = load<T>(p[i]);
      if constexpr (kMaster) pv = math::reseed_master(pv, shadow[i]);  // Note [master re-seed]
      const T gv = load<T>(g[i]);
      T sv = load<T>(s[i]);
      p_old = pv;
      math::adagrad_update<kL2>(pv, gv, sv, cs, clr);
      p[i] = narrow<PL>(pv);
      if constexpr (kMaster) shadow[i] = narrow<P>(pv);
      s[i] = narrow<S>(sv);
      p_new = pv;
      g_eff = gv * cs.coef;
    };

    update_elements<kTelemetry, T>(n, a.partials + kTelemetrySums * c, update);
  });
}

}  // namespace

void adagrad_loop(const AdagradLoop& a) {
  const TableView& t = a.table;
  dispatch::switch_dtype_set(t.param_dtype, t.grad_dtype, t.state_dtype, t.master != nullptr,
                             [&](auto set) {
    dispatch::switch_bool(a.l2, [&](auto l2) {
      dispatch::switch_bool(a.telemetry, [&](auto telemetry) {
        adagrad_chunks<decltype(set), decltype(l2)::value, decltype(telemetry)::value>(a);
      });
    });
  });
}

}  // namespace fusedopt::cpu::FUSEDOPT_ISA
