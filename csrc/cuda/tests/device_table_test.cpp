// Host-side checks of the CUDA core's pure host logic: the table layout and chunk list
// (csrc/cuda/device_table.h), the persistent grid size and the vector widths. Plain C++, no
// CUDA: tests/test_cuda_build.py compiles it with the host compiler and runs it in CI.
//
// Exit status 0 when every check passes; each failure prints the expression and its line.
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <vector>

#include "cuda/device_table.h"
#include "cuda/launch_config.h"
#include "fusedopt/dtype.h"

using namespace fusedopt;
using namespace fusedopt::cuda;

namespace {

int failures = 0;
int checks = 0;

#define CHECK(cond)                                                 \
  do {                                                              \
    ++checks;                                                       \
    if (!(cond)) {                                                  \
      ++failures;                                                   \
      std::printf("FAILED line %d: %s\n", __LINE__, #cond);          \
    }                                                               \
  } while (0)

template <class F>
bool throws_invalid_argument(F&& f) {
  try {
    f();
  } catch (const std::invalid_argument&) {
    return true;
  }
  return false;
}

std::array<std::vector<int64_t>, kNumRows> rows_with(int row, std::vector<int64_t> values) {
  std::array<std::vector<int64_t>, kNumRows> rows;
  rows[size_t(row)] = std::move(values);
  return rows;
}

/// Every element of every tensor is in exactly one chunk, chunks of a tensor are consecutive,
/// in list order, contiguous, at most chunk_size long and start at multiples of chunk_size.
void check_cover(const std::vector<int64_t>& numel, int64_t chunk_size) {
  const TableLayout layout = plan_table(numel, chunk_size);
  const std::vector<int64_t> table = build_table(numel, {}, chunk_size);
  CHECK(int64_t(table.size()) == layout.size());
  std::vector<int64_t> covered(numel.size(), 0);
  int64_t previous_tensor = -1;
  for (int64_t c = 0; c < layout.n_chunks; ++c) {
    const ChunkRange r = layout.chunk_range(table.data(), c);
    CHECK(r.tensor >= previous_tensor);
    CHECK(r.begin == covered[size_t(r.tensor)]);  // contiguous, in order
    CHECK(r.begin % chunk_size == 0);
    CHECK(r.end > r.begin && r.end - r.begin <= chunk_size);
    CHECK(r.end <= numel[size_t(r.tensor)]);
    covered[size_t(r.tensor)] = r.end;
    previous_tensor = r.tensor;
  }
  for (size_t k = 0; k < numel.size(); ++k) {
    CHECK(covered[k] == numel[k]);
    const int64_t first = table[size_t(layout.first_chunk_offset()) + k];
    const int64_t last = table[size_t(layout.first_chunk_offset()) + k + 1];
    CHECK(last - first == chunks_of(numel[k], chunk_size));
  }
  CHECK(table[size_t(layout.first_chunk_offset() + layout.n_tensors)] == layout.n_chunks);
}

void test_chunks_of() {
  CHECK(chunks_of(0, kChunkSize) == 0);
  CHECK(chunks_of(1, kChunkSize) == 1);
  CHECK(chunks_of(kChunkSize, kChunkSize) == 1);
  CHECK(chunks_of(kChunkSize + 1, kChunkSize) == 2);
  const int64_t big = (int64_t(1) << 31) + 1;  // > 2^31 elements
  CHECK(chunks_of(big, kChunkSize) == (int64_t(1) << 15) + 1);
  const int64_t huge = INT64_MAX - 3;  // no overflow in the ceiling division
  CHECK(chunks_of(huge, kChunkSize) == huge / kChunkSize + 1);
  CHECK(throws_invalid_argument([] { chunks_of(-1, kChunkSize); }));
}

void test_plan_validation() {
  CHECK(throws_invalid_argument([] { plan_table({4}, 0); }));
  CHECK(throws_invalid_argument([] { plan_table({4}, -8); }));
  CHECK(throws_invalid_argument([] { plan_table({4}, kILP + 2); }));  // not whole vectors
  CHECK(throws_invalid_argument([] { plan_table({4, -1}, kChunkSize); }));
  CHECK(plan_table({}, kChunkSize).n_chunks == 0);
  CHECK(plan_table({}, kChunkSize).size() == 1);  // first_chunk[0] only
}

void test_layout_and_rows() {
  const std::vector<int64_t> numel = {3, 0, 9, 8};
  const int64_t chunk = 4;  // tensor 0: 1 chunk, 1: none, 2: 3 chunks, 3: 2 chunks
  const TableLayout layout = plan_table(numel, chunk);
  CHECK(layout.n_tensors == 4);
  CHECK(layout.n_chunks == 6);
  std::array<std::vector<int64_t>, kNumRows> rows;
  rows[kRowParam] = {101, 102, 103, 104};
  rows[kRowStep] = {201, 202, 203, 204};
  const std::vector<int64_t> t = build_table(numel, rows, chunk);
  CHECK(int64_t(t.size()) == layout.size());
  for (int64_t k = 0; k < 4; ++k) {
    CHECK(t[size_t(layout.row_offset(kRowParam) + k)] == 101 + k);
    CHECK(t[size_t(layout.row_offset(kRowStep) + k)] == 201 + k);
    CHECK(t[size_t(layout.row_offset(kRowGrad) + k)] == 0);  // an unused row is zero
    CHECK(t[size_t(layout.numel_offset() + k)] == numel[size_t(k)]);
  }
  const int64_t first[] = {0, 1, 1, 4, 6};
  for (int64_t k = 0; k <= 4; ++k) {
    CHECK(t[size_t(layout.first_chunk_offset() + k)] == first[k]);
  }
  const int64_t owner[] = {0, 2, 2, 2, 3, 3};
  const int64_t begin[] = {0, 0, 4, 8, 0, 4};
  const int64_t end[] = {3, 4, 8, 9, 4, 8};
  for (int64_t c = 0; c < 6; ++c) {
    const ChunkRange r = layout.chunk_range(t.data(), c);
    CHECK(r.tensor == owner[c]);
    CHECK(r.begin == begin[c]);
    CHECK(r.end == end[c]);
  }
  CHECK(throws_invalid_argument([&] { build_table(numel, rows_with(kRowGrad, {1, 2}), chunk); }));
}

void test_cover() {
  check_cover({0}, kChunkSize);
  check_cover({1, 3, 7, 9, 15, 17, 33}, kChunkSize);
  check_cover({65537, 0, 131072, 5, 0}, kChunkSize);
  check_cover({0, 0, 12, 0}, 4);
  std::vector<int64_t> many(1500, 5);  // > 1,000 tensors
  many[700] = 70000;
  check_cover(many, kChunkSize);
}

void test_large_offsets() {
  // A tensor of 3 * 2^31 + 5 elements (its table only, no data): chunk offsets need int64.
  const int64_t n = 3 * (int64_t(1) << 31) + 5;
  const std::vector<int64_t> numel = {7, n, 2};
  const TableLayout layout = plan_table(numel, kChunkSize);
  const std::vector<int64_t> t = build_table(numel, {}, kChunkSize);
  const int64_t last_of_big = t[size_t(layout.first_chunk_offset() + 2)] - 1;
  const ChunkRange r = layout.chunk_range(t.data(), last_of_big);
  CHECK(r.tensor == 1);
  CHECK(r.end == n);
  CHECK(r.begin == (n - 1) / kChunkSize * kChunkSize);
  CHECK(r.begin > (int64_t(1) << 32));
  const ChunkRange after = layout.chunk_range(t.data(), last_of_big + 1);
  CHECK(after.tensor == 2 && after.begin == 0 && after.end == 2);
}

void test_persistent_grid() {
  CHECK(persistent_grid(0, 132, 4) == 1);  // never a 0-block launch
  CHECK(persistent_grid(5, 132, 4) == 5);
  CHECK(persistent_grid(100000, 132, 4) == 132 * 4);
  CHECK(persistent_grid(100000, 132, 0) == 132);                        // at least one per SM
  CHECK(persistent_grid(100000, 132, 64) == 132 * kMaxBlocksPerSm);     // capped
  CHECK(persistent_grid(100000, 0, 2) == 1);
}

void test_vector_width() {
  static_assert(vector_width<float>() == kILP);
  static_assert(vector_width<bf16_t, float>() == kILP);
  static_assert(vector_width<fp16_t>() == kILP);  // 8 bytes a vector: never wider than kILP
  static_assert(vector_width<float, double>() == kVectorBytes / 8);
  static_assert(vector_width<double>() * sizeof(double) == kVectorBytes);
  static_assert(kChunkSize % kILP == 0);
  CHECK(true);
}

}  // namespace

int main() {
  test_chunks_of();
  test_plan_validation();
  test_layout_and_rows();
  test_cover();
  test_large_offsets();
  test_persistent_grid();
  test_vector_width();
  std::printf("%d checks, %d failed\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
