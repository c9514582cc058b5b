// The prologue's norm pass (math: csrc/math/prologue.h): per chunk, the compensated fp64 sum
// of the unscaled squares over fixed lanes (Note [fixed lanes]) and the non-finite flag; compiled once
// per ISA. Grads of any mix of dtypes: the dtype is switched per chunk, outside the loop.
#include "cpu/kernel_args.h"
#include "cpu/kernels/isa_namespace.h"
#include "cpu/lanes.h"
#include "cpu/parallel.h"
#include "dispatch/switch.h"
#include "math/prologue.h"

namespace fusedopt::cpu::FUSEDOPT_ISA {
namespace {

template <class T, class G>
void norm_chunk(const PrologueLoop& a, int64_t c, T inv) {
  const Chunk ch = a.chunks.chunks[c];
  const G* g = static_cast<const G*>(a.grad[ch.tensor]) + ch.begin;
  LaneSums<std::is_same_v<T, double>> sq;
  uint32_t bad[kLanes] = {};
  for_each_lane(ch.end - ch.begin, [&](int64_t i, int lane) FUSEDOPT_INLINE_LAMBDA {
    const G x = g[i];
    sq.add(lane, double(math::unscaled_square(load<T>(x), inv)));
    bad[lane] |= uint32_t(is_nonfinite(x));
  });
  a.partial_sq[c] = sq.total();
  a.partial_bad[c] = any_lane(bad);
}

template <class T>
void prologue_chunks(const PrologueLoop& a) {
  const T inv = T(a.inv);
  parallel_chunks(a.chunks, a.nthreads, [&](int64_t c) {
    dispatch::switch_dtype(a.dtype[a.chunks.chunks[c].tensor], [&](auto tag) {
      using G = typename decltype(tag)::type;
      // An fp64 grad makes the whole pass fp64 (opmath64), so <float, double> never runs.
      if constexpr (!(std::is_same_v<G, double> && std::is_same_v<T, float>)) {
        norm_chunk<T, G>(a, c, inv);
      }
    });
  });
}

}  // namespace

void prologue_loop(const PrologueLoop& a) {
  if (a.opmath64) {
    prologue_chunks<double>(a);
  } else {
    prologue_chunks<float>(a);
  }
}

}  // namespace fusedopt::cpu::FUSEDOPT_ISA
