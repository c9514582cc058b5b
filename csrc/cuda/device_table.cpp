#include "cuda/device_table.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "cuda/launch_config.h"

namespace fusedopt::cuda {

int64_t chunks_of(int64_t numel, int64_t chunk_size) {
  if (numel < 0) {
    throw std::invalid_argument("fusedopt: negative tensor size " + std::to_string(numel));
  }
  // ceil(numel / chunk_size) without numel + chunk_size - 1, which could overflow near 2^63
  return numel / chunk_size + (numel % chunk_size != 0 ? 1 : 0);
}

TableLayout plan_table(const std::vector<int64_t>& numel, int64_t chunk_size) {
  if (chunk_size <= 0 || chunk_size % kILP != 0) {
    throw std::invalid_argument("fusedopt: chunk_size must be a positive multiple of " +
                                std::to_string(kILP) + ", got " + std::to_string(chunk_size));
  }
  TableLayout layout;
  layout.n_tensors = int64_t(numel.size());
  layout.chunk_size = chunk_size;
  for (int64_t n : numel) {
    layout.n_chunks += chunks_of(n, chunk_size);
  }
  return layout;
}

std::vector<int64_t> build_table(const std::vector<int64_t>& numel,
                                 const std::array<std::vector<int64_t>, kNumRows>& rows,
                                 int64_t chunk_size) {
  const TableLayout layout = plan_table(numel, chunk_size);
  const int64_t n = layout.n_tensors;
  std::vector<int64_t> table(size_t(layout.size()), 0);
  for (int r = 0; r < kNumRows; ++r) {
    const std::vector<int64_t>& row = rows[size_t(r)];
    if (row.empty()) {
      continue;
    }
    if (int64_t(row.size()) != n) {
      throw std::invalid_argument("fusedopt: table row " + std::to_string(r) + " has " +
                                  std::to_string(row.size()) + " entries, expected " +
                                  std::to_string(n));
    }
    std::copy(row.begin(), row.end(), table.begin() + layout.row_offset(r));
  }
  std::copy(numel.begin(), numel.end(), table.begin() + layout.numel_offset());
  int64_t* first_chunk = table.data() + layout.first_chunk_offset();
  int64_t* chunk_tensor = table.data() + layout.chunk_tensor_offset();
  int64_t c = 0;
  for (int64_t k = 0; k < n; ++k) {
    first_chunk[k] = c;
    for (int64_t j = chunks_of(numel[size_t(k)], chunk_size); j > 0; --j) {
      chunk_tensor[c++] = k;
    }
  }
  first_chunk[n] = c;
  return table;
}

int64_t persistent_grid(int64_t n_chunks, int sm_count, int blocks_per_sm) {
  const int64_t per_sm = std::clamp(blocks_per_sm, 1, kMaxBlocksPerSm);
  const int64_t resident = std::max<int64_t>(1, int64_t(sm_count) * per_sm);
  return std::max<int64_t>(1, std::min(n_chunks, resident));
}

}  // namespace fusedopt::cuda
