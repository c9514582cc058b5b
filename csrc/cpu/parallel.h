// Running a chunk plan on the CPU's threads.
//
// Note [threads]: OpenMP, deliberately the runtime torch already runs. torch's CPU wheel ships
// torch/lib/libgomp.so.1 and loads it before fusedopt._C; our module needs the same soname, so
// the dynamic loader binds it to that copy: one runtime and one thread pool for torch's intra-op
// work and ours (no second set of spinning threads on the same cores), threads already warm from
// torch's last parallel region, and no fork/join code of our own. The thread count is always
// passed explicitly (torch.get_num_threads(), from Python): never a runtime default.
// tests/test_native_build.py checks that a process running both maps one libgomp.
#pragma once

#include <omp.h>

#include <cstdint>

#include "cpu/chunk_plan.h"
#include "fusedopt/macros.h"

namespace fusedopt::cpu {

/// Below this much work (cost units, ~elements) per thread, extra threads cost more to wake
/// than they save.
constexpr int64_t kMinCostPerThread = int64_t(1) << 15;

/// f(c) for every chunk c of the plan, chunks split across at most nthreads threads
/// (Note [chunk plan]). Each chunk runs exactly once, on exactly one thread.
template <class F>
FUSEDOPT_INLINE void parallel_chunks(const ChunkView& v, int nthreads, F&& f) {
  const int64_t by_work = v.cost_prefix[v.num_chunks] / kMinCostPerThread;
  int64_t want = nthreads < by_work ? nthreads : by_work;
  want = want < v.num_chunks ? want : v.num_chunks;
  if (want <= 1) {
    for (int64_t c = 0; c < v.num_chunks; ++c) {
      f(c);
    }
    return;
  }
#pragma omp parallel num_threads(int(want))
  {
    int64_t lo, hi;
    thread_chunks(v, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
    for (int64_t c = lo; c < hi; ++c) {
      f(c);
    }
  }
}

}  // namespace fusedopt::cpu
