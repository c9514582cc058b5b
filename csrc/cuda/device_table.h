// The device-resident table of one tensor list, built on the host (plain C++: no CUDA here, so
// csrc/cuda/tests/device_table_test.cpp checks it with g++ alone).
//
// Note [device table]: one int64 array, uploaded once per tensor list and read by every launch
// over that list (python/fusedopt/_native_cuda.py keeps it with the bucket). With n tensors and
// C chunks its sections are, in int64 elements:
//
//   [r * n, (r + 1) * n)        row r of kNumRows: a pointer (or a dtype code) per tensor
//   [kNumRows * n, + n)         numel per tensor
//   [(kNumRows + 1) * n, + n+1) first_chunk: tensor k owns chunks
//                               [first_chunk[k], first_chunk[k + 1])
//   [(kNumRows + 2) * n + 1, + C) chunk_tensor: the tensor of each chunk
//
// Chunk c of tensor k covers elements [b, min(b + chunk_size, numel[k])) with
// b = (c - first_chunk[k]) * chunk_size: tensors are cut in list order from element 0, exactly as
// the CPU engine cuts them (csrc/cpu/chunk_plan.h), and an empty tensor owns no chunk. Offsets
// are int64 everywhere: a tensor may exceed 2^31 elements.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "math/elementwise.h"

namespace fusedopt::cuda {

/// The rows of a table. Update passes fill param, grad, (master), the algorithm's states in the
/// slot order of csrc/cpu/tensor_table.h (Adam: exp_avg, exp_avg_sq, max_exp_avg_sq; SGD family:
/// momentum_buffer; an element-wise algorithm (Adagrad: sum): its STATES) and step; the norm
/// pass fills grad and dtype.
enum Row : int {
  kRowParam = 0,
  kRowGrad = 1,
  kRowMaster = 2,
  kRowState0 = 3,
  kRowStep = kRowState0 + math::kMaxStates,
  kRowDtype = kRowStep + 1,  // storage dtype code per tensor (grad lists of mixed dtypes)
  kNumRows = kRowDtype + 1,
};
constexpr int kMaxStates = kRowStep - kRowState0;

/// Elements [begin, end) of tensor `tensor`.
struct ChunkRange {
  int64_t tensor;
  int64_t begin;
  int64_t end;
};

/// Where each section of a table starts, and how a chunk is read back (Note [device table]).
/// The one definition of the layout: the host builds tables with it and the kernels read them
/// with it (constexpr members are callable from device code under --expt-relaxed-constexpr).
struct TableLayout {
  int64_t n_tensors = 0;
  int64_t n_chunks = 0;
  int64_t chunk_size = 0;

  constexpr int64_t row_offset(int row) const { return int64_t(row) * n_tensors; }
  constexpr int64_t numel_offset() const { return int64_t(kNumRows) * n_tensors; }
  constexpr int64_t first_chunk_offset() const { return int64_t(kNumRows + 1) * n_tensors; }
  constexpr int64_t chunk_tensor_offset() const { return int64_t(kNumRows + 2) * n_tensors + 1; }
  constexpr int64_t size() const { return chunk_tensor_offset() + n_chunks; }

  /// Chunk c of `table`: tensor k = chunk_tensor[c], b = (c - first_chunk[k]) * chunk_size,
  /// end = min(b + chunk_size, numel[k]). All int64: b may exceed 2^31.
  constexpr ChunkRange chunk_range(const int64_t* table, int64_t c) const {
    const int64_t k = table[chunk_tensor_offset() + c];
    const int64_t begin = (c - table[first_chunk_offset() + k]) * chunk_size;
    const int64_t left = table[numel_offset() + k] - begin;
    return {k, begin, begin + (left < chunk_size ? left : chunk_size)};
  }
};

/// Number of chunks of `numel` elements (0 for an empty tensor). Throws on a negative size.
int64_t chunks_of(int64_t numel, int64_t chunk_size);

/// Layout of a table over tensors of these sizes. Throws std::invalid_argument when
/// chunk_size is not a positive multiple of kILP (the vector path needs whole vectors).
TableLayout plan_table(const std::vector<int64_t>& numel, int64_t chunk_size);

/// The table's int64 contents. `rows[r]` holds one value per tensor or is empty (an unused row
/// is zero-filled); throws std::invalid_argument on a row of the wrong length.
std::vector<int64_t> build_table(const std::vector<int64_t>& numel,
                                 const std::array<std::vector<int64_t>, kNumRows>& rows,
                                 int64_t chunk_size);

/// Blocks of the persistent grid: enough to fill every SM at the kernel's occupancy, never more
/// than there are chunks, at least one (a launch with 0 blocks is an error).
int64_t persistent_grid(int64_t n_chunks, int sm_count, int blocks_per_sm);

}  // namespace fusedopt::cuda
