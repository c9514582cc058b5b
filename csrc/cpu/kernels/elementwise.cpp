// The chunk loop of every element-wise algorithm (math/elementwise.h), one instantiation per
// storage combination x algorithm x telemetry, compiled once per ISA. The algorithm supplies
// only its element update; loads, master re-seed, stores and telemetry are written here once.
#include "cpu/kernel_args.h"
#include "cpu/kernels/isa_namespace.h"
#include "cpu/kernels/update_loop.h"
#include "cpu/parallel.h"
#include "dispatch/switch.h"
#include "math/algorithms.h"
#include "math/master.h"

namespace fusedopt::cpu::FUSEDOPT_ISA {
namespace {

/// The scalars of one tensor in opmath, held by value in the element lambda (Note [scalars by
/// value], update_loop.h).
template <class T>
struct OpScalars {
  T coef;
  T s[math::kMaxScalars];
};

template <class Set, class A, bool kTelemetry>
void elementwise_chunks(const ElementwiseLoop& a) {
  using P = typename Set::param;
  using G = typename Set::grad;
  using S = typename Set::state;
  constexpr bool kMaster = Set::master;
  using PL = std::conditional_t<kMaster, float, P>;  // what the update loads and stores
  using T = opmath_t<PL>;
  constexpr int K = A::kStates;

  const TableView& tv = a.table;
  parallel_chunks(tv.chunks, a.nthreads, [&](int64_t c) {
    const Chunk ch = tv.chunks.chunks[c];
    const int64_t k = ch.tensor, i0 = ch.begin, n = ch.end - ch.begin;
    PL* p = static_cast<PL*>(kMaster ? tv.master[k] : tv.param[k]) + i0;
    P* shadow = kMaster ? static_cast<P*>(tv.param[k]) + i0 : nullptr;
    const G* g = static_cast<const G*>(tv.grad[k]) + i0;
    S* st[K];
    for (int j = 0; j < K; ++j) st[j] = static_cast<S*>(tv.state[j][k]) + i0;
    // Every scalar rounded to opmath once, as the reference's .to(op).
    OpScalars<T> sc{};
    sc.coef = T(a.coef);
    const double* s64 = a.scalars + k * math::kMaxScalars;
    for (int j = 0; j < A::kScalars; ++j) sc.s[j] = T(s64[j]);

    auto update = [&, sc](int64_t i, T& p_old, T& p_new, T& g_eff) FUSEDOPT_INLINE_LAMBDA {
      T pv = load<T>(p[i]);
      if constexpr (kMaster) pv = math::reseed_master(pv, shadow[i]);  // Note [master re-seed]
      const T gv = load<T>(g[i]) * sc.coef;
      T sv[K];
      for (int j = 0; j < K; ++j) sv[j] = load<T>(st[j][i]);
      p_old = pv;
      A::template update<T>(pv, gv, sv, sc.s);
      p[i] = narrow<PL>(pv);
      if constexpr (kMaster) shadow[i] = narrow<P>(pv);
      for (int j = 0; j < K; ++j) st[j][i] = narrow<S>(sv[j]);
      p_new = pv;
      g_eff = gv;
    };

    update_elements<kTelemetry, T>(n, a.partials + kTelemetrySums * c, update);
  });
}

}  // namespace

void elementwise_loop(const ElementwiseLoop& a) {
  const TableView& t = a.table;
  dispatch::switch_dtype_set(t.param_dtype, t.grad_dtype, t.state_dtype, t.master != nullptr,
                             [&](auto set) {
    dispatch::switch_bool(a.telemetry, [&](auto telemetry) {
      int index = 0;
#define FUSEDOPT_RUN(A)                                                                   \
  if (a.algorithm == index++) {                                                           \
    elementwise_chunks<decltype(set), math::A, decltype(telemetry)::value>(a);            \
  }
      FUSEDOPT_ELEMENTWISE_ALGORITHMS(FUSEDOPT_RUN)
#undef FUSEDOPT_RUN
    });
  });
}

}  // namespace fusedopt::cpu::FUSEDOPT_ISA
