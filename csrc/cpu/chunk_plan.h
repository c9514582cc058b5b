// The multi-tensor traversal plan: every tensor cut into chunks of at most chunk_size elements,
// in list order, and a cost prefix that splits the chunk list into contiguous, balanced ranges,
// one per thread.
//
// Note [chunk plan]: a chunk (tensor id, begin, end) is the unit of work and of reduction. The
// chunk boundaries depend only on the tensor sizes and chunk_size, never on the thread count, so
// every per-chunk partial sum (and so every reduced value) is the same for any number of
// threads. A chunk costs its element count plus kChunkOverheadCost, so a list of many tiny
// tensors is balanced by count and a few huge ones by elements: thread k of n gets the chunks
// whose cost prefix lies in [k/n, (k+1)/n) of the total.
#pragma once

#include <cstdint>
#include <vector>

#include "fusedopt/macros.h"

namespace fusedopt::cpu {

/// Default chunk size, 2^16 elements: a 256 KiB fp32 stream per chunk. GPT-2 small (124.4M
/// params, 148 tensors) becomes ~2,000 chunks, so the per-chunk bookkeeping (~50 ns) is far
/// below 0.1% of a step and two threads are balanced to within one chunk (0.05%).
constexpr int64_t kDefaultChunkSize = int64_t(1) << 16;

/// Fixed per-chunk cost in element-equivalents (pointer and scalar set-up, the lane reduction).
constexpr int64_t kChunkOverheadCost = 256;

struct Chunk {
  int64_t tensor;
  int64_t begin;
  int64_t end;
};

/// What a kernel needs of a plan: plain pointers, so the per-ISA kernels use no std:: code
/// (Note [one ISA per translation unit], csrc/cpu/isa.h).
struct ChunkView {
  const Chunk* chunks;
  int64_t num_chunks;
  const int64_t* cost_prefix;  // num_chunks + 1 entries, cost_prefix[0] = 0
};

/// First chunk c with cost_prefix[c] >= cost (num_chunks when none).
FUSEDOPT_INLINE int64_t first_chunk_at_cost(const ChunkView& v, int64_t cost) {
  int64_t lo = 0, hi = v.num_chunks;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (v.cost_prefix[mid] < cost) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

/// The chunk range [*lo, *hi) of thread tid out of nthreads (Note [chunk plan]).
FUSEDOPT_INLINE void thread_chunks(const ChunkView& v, int tid, int nthreads, int64_t* lo,
                                   int64_t* hi) {
  const int64_t total = v.cost_prefix[v.num_chunks];
  *lo = first_chunk_at_cost(v, total * tid / nthreads);
  *hi = tid + 1 == nthreads ? v.num_chunks : first_chunk_at_cost(v, total * (tid + 1) / nthreads);
}

/// The chunk list of one tensor list (built once per size signature, cached by the caller).
class ChunkPlan {
 public:
  ChunkPlan(const std::vector<int64_t>& numel, int64_t chunk_size);

  ChunkView view() const { return {chunks_.data(), int64_t(chunks_.size()), cost_prefix_.data()}; }
  int64_t num_chunks() const { return int64_t(chunks_.size()); }
  int64_t chunk_size() const { return chunk_size_; }
  int64_t total_cost() const { return cost_prefix_.back(); }
  const std::vector<Chunk>& chunks() const { return chunks_; }

 private:
  int64_t chunk_size_;
  std::vector<Chunk> chunks_;
  std::vector<int64_t> cost_prefix_;
};

}  // namespace fusedopt::cpu
