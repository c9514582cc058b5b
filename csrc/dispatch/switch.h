// Runtime codes -> compile-time types and modes: the only place that knows which storage
// combinations and modes are instantiated.
//
// FUSEDOPT_DTYPE_SETS is the manifest of storage combinations (param, grad, state, master):
// adding a dtype combination to every kernel is one line here (and one in the registry).
// Modes are switched with switch_enum / switch_bool, so a kernel is written once as a template
// over them. Every helper is forced inline: the lambdas it calls belong to the calling kernel's
// ISA namespace (Note [one ISA per translation unit], csrc/cpu/isa.h).
#pragma once

#include <type_traits>

#include "fusedopt/dtype.h"
#include "fusedopt/macros.h"

namespace fusedopt::dispatch {

/// One storage combination. kMaster: the update loads and stores an fp32 master copy and rounds
/// it into the (16-bit) param.
template <class P, class G, class S, bool kMaster>
struct DTypeSet {
  using param = P;
  using grad = G;
  using state = S;
  static constexpr bool master = kMaster;
};

template <class T>
struct Code;
template <>
struct Code<float> : std::integral_constant<DType, DType::kFloat32> {};
template <>
struct Code<fp16_t> : std::integral_constant<DType, DType::kFloat16> {};
template <>
struct Code<bf16_t> : std::integral_constant<DType, DType::kBFloat16> {};
template <>
struct Code<double> : std::integral_constant<DType, DType::kFloat64> {};

// (param, grad, state, master). Grads are the param dtype or fp32; states fp32 or bf16 (fp64
// for fp64 params); master weights only for 16-bit params. A bucket without states (SGD family,
// AdaGrad-Norm) is dispatched with the default state dtype: fp32, fp64 for fp64 params.
#define FUSEDOPT_DTYPE_SETS(X)                                                             \
  X(float, float, float, false) X(float, float, bf16_t, false)                             \
  X(double, double, double, false) X(double, float, double, false)                         \
  X(bf16_t, bf16_t, float, false) X(bf16_t, bf16_t, bf16_t, false)                         \
  X(bf16_t, float, float, false) X(bf16_t, float, bf16_t, false)                           \
  X(bf16_t, bf16_t, float, true) X(bf16_t, bf16_t, bf16_t, true)                           \
  X(bf16_t, float, float, true) X(bf16_t, float, bf16_t, true)                             \
  X(fp16_t, fp16_t, float, false) X(fp16_t, fp16_t, bf16_t, false)                         \
  X(fp16_t, float, float, false) X(fp16_t, float, bf16_t, false)                           \
  X(fp16_t, fp16_t, float, true) X(fp16_t, fp16_t, bf16_t, true)                           \
  X(fp16_t, float, float, true) X(fp16_t, float, bf16_t, true)

/// f(DTypeSet<...>{}) for the combination of the codes; false when it is not in the manifest.
template <class F>
FUSEDOPT_INLINE bool switch_dtype_set(DType p, DType g, DType s, bool master, F&& f) {
  bool hit = false;
#define FUSEDOPT_MATCH(P, G, S, M)                                                      \
  if (!hit && p == Code<P>::value && g == Code<G>::value && s == Code<S>::value &&      \
      master == M) {                                                                    \
    hit = true;                                                                         \
    f(DTypeSet<P, G, S, M>{});                                                          \
  }
  FUSEDOPT_DTYPE_SETS(FUSEDOPT_MATCH)
#undef FUSEDOPT_MATCH
  return hit;
}

template <class T>
struct Tag {
  using type = T;
};

/// f(Tag<storage type>{}) for one dtype code; false for an unknown code.
template <class F>
FUSEDOPT_INLINE bool switch_dtype(DType d, F&& f) {
  switch (d) {
    case DType::kFloat32: f(Tag<float>{}); return true;
    case DType::kFloat16: f(Tag<fp16_t>{}); return true;
    case DType::kBFloat16: f(Tag<bf16_t>{}); return true;
    case DType::kFloat64: f(Tag<double>{}); return true;
  }
  return false;
}

/// f(std::integral_constant<E, V>{}) for the V among Vs equal to e.
template <class E, E... Vs, class F>
FUSEDOPT_INLINE void switch_enum(E e, F&& f) {
  ((e == Vs ? (f(std::integral_constant<E, Vs>{}), 0) : 0), ...);
}

template <class F>
FUSEDOPT_INLINE void switch_bool(bool b, F&& f) {
  if (b) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

}  // namespace fusedopt::dispatch
