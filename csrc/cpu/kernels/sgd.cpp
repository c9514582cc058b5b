// SGD-family chunk loops (math: csrc/math/sgd.h): the scaled step along the grad or the
// momentum, and NSGDm's momentum pass; compiled once per ISA.
#include "cpu/kernel_args.h"
#include "cpu/kernels/isa_namespace.h"
#include "cpu/kernels/update_loop.h"
#include "cpu/lanes.h"
#include "cpu/parallel.h"
#include "dispatch/switch.h"
#include "math/master.h"
#include "math/sgd.h"

namespace fusedopt::cpu::FUSEDOPT_ISA {
namespace {

template <class Set, bool kMomentumDirection, bool kTelemetry>
void sgd_chunks(const SgdLoop& a) {
  using P = typename Set::param;
  using G = typename Set::grad;
  using S = typename Set::state;
  constexpr bool kMaster = Set::master;
  using PL = std::conditional_t<kMaster, float, P>;
  using T = opmath_t<PL>;

  const TableView& tv = a.table;
  const T coef = T(a.coef), grad_coef = T(a.grad_coef), scale = T(a.scale);
  parallel_chunks(tv.chunks, a.nthreads, [&](int64_t c) {
    const Chunk ch = tv.chunks.chunks[c];
    const int64_t k = ch.tensor, i0 = ch.begin, n = ch.end - ch.begin;
    PL* p = static_cast<PL*>(kMaster ? tv.master[k] : tv.param[k]) + i0;
    P* shadow = kMaster ? static_cast<P*>(tv.param[k]) + i0 : nullptr;
    const G* g = static_cast<const G*>(tv.grad[k]) + i0;
    const S* mom = kMomentumDirection ? static_cast<const S*>(tv.state[0][k]) + i0 : nullptr;

    // scalars by value: Note [scalars by value] (update_loop.h)
    auto update = [&, coef, grad_coef, scale](int64_t i, T& p_old, T& p_new,
                                              T& g_eff) FUSEDOPT_INLINE_LAMBDA {
      T pv = load<T>(p[i]);
      if constexpr (kMaster) pv = math::reseed_master(pv, shadow[i]);  // Note [master re-seed]
      T d;
      if constexpr (kMomentumDirection) {
        d = load<T>(mom[i]);
      } else {
        d = load<T>(g[i]);
      }
      p_old = pv;
      p_new = math::scaled_sgd_update(pv, d, coef, scale);
      p[i] = narrow<PL>(p_new);
      if constexpr (kMaster) shadow[i] = narrow<P>(p_new);
      if constexpr (kTelemetry) g_eff = load<T>(g[i]) * grad_coef;  // the grad, not the direction
    };
    update_elements<kTelemetry, T>(n, a.partials + kTelemetrySums * c, update);
  });
}

template <class Set>
void momentum_chunks(const MomentumLoop& a) {
  using G = typename Set::grad;
  using S = typename Set::state;
  using T = opmath_t<typename Set::param>;

  const TableView& tv = a.table;
  const T coef = T(a.coef), one_minus_rho = T(a.one_minus_rho), rho = T(a.rho);
  parallel_chunks(tv.chunks, a.nthreads, [&](int64_t c) {
    const Chunk ch = tv.chunks.chunks[c];
    const int64_t k = ch.tensor, i0 = ch.begin, n = ch.end - ch.begin;
    const G* g = static_cast<const G*>(tv.grad[k]) + i0;
    S* m = static_cast<S*>(tv.state[0][k]) + i0;
    LaneSums<std::is_same_v<T, double>> dm;
    // scalars by value: Note [scalars by value] (update_loop.h)
    for_each_lane(n, [&, coef, one_minus_rho, rho](int64_t i, int lane) FUSEDOPT_INLINE_LAMBDA {
      const T mv = math::momentum_update(load<T>(m[i]), load<T>(g[i]), coef, one_minus_rho, rho);
      m[i] = narrow<S>(mv);
      dm.add(lane, double(mv * mv));
    });
    a.partials[c] = dm.total();
  });
}

}  // namespace

void sgd_loop(const SgdLoop& a) {
  const TableView& t = a.table;
  dispatch::switch_dtype_set(t.param_dtype, t.grad_dtype, t.state_dtype, t.master != nullptr,
                             [&](auto set) {
    dispatch::switch_bool(a.momentum_direction, [&](auto momentum_direction) {
      dispatch::switch_bool(a.telemetry, [&](auto telemetry) {
        sgd_chunks<decltype(set), decltype(momentum_direction)::value,
                   decltype(telemetry)::value>(a);
      });
    });
  });
}

void momentum_loop(const MomentumLoop& a) {
  const TableView& t = a.table;
  dispatch::switch_dtype_set(t.param_dtype, t.grad_dtype, t.state_dtype, t.master != nullptr,
                             [&](auto set) { momentum_chunks<decltype(set)>(a); });
}

}  // namespace fusedopt::cpu::FUSEDOPT_ISA
