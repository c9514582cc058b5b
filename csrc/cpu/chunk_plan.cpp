#include "cpu/chunk_plan.h"

#include <stdexcept>

namespace fusedopt::cpu {

ChunkPlan::ChunkPlan(const std::vector<int64_t>& numel, int64_t chunk_size)
    : chunk_size_(chunk_size) {
  if (chunk_size <= 0) {
    throw std::invalid_argument("fusedopt: chunk_size must be positive");
  }
  cost_prefix_.push_back(0);
  for (int64_t t = 0; t < int64_t(numel.size()); ++t) {
    if (numel[t] < 0) {
      throw std::invalid_argument("fusedopt: negative tensor size");
    }
    for (int64_t begin = 0; begin < numel[t]; begin += chunk_size) {
      const int64_t end = numel[t] - begin > chunk_size ? begin + chunk_size : numel[t];
      chunks_.push_back({t, begin, end});
      cost_prefix_.push_back(cost_prefix_.back() + (end - begin) + kChunkOverheadCost);
    }
  }
}

}  // namespace fusedopt::cpu
