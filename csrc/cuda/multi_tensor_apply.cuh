// The generic multi-tensor engine: a persistent grid walks the chunks of a device table
// (Note [device table], device_table.h) and hands each chunk to an operation. It knows only
// pointers, sizes and chunks; the algorithms live in the operations (adam_step.cu, ...) and
// their math in csrc/math/*.h.
//
// Note [persistent grid]: the grid has at most as many blocks as fit the GPU at once
// (device_table.h persistent_grid); block b takes chunks b, b + gridDim.x, ... so one launch
// covers any number of tensors. Every partial sum is stored per chunk, never per block, so no
// result depends on the grid size: the same bits on any GPU of the same architecture.
//
// Note [vector path]: a chunk whose every stream starts on a boundary of W elements (the
// operation's vector width, launch_config.h) is read and written W elements at a time (one
// 16-byte access per fp32 stream): thread j takes the vectors j, j + kBlockSize, ..., then the
// last n % W elements one each. Any other chunk (a view at an odd offset) runs element by
// element, thread j taking elements j, j + kBlockSize, ... The element order inside a thread is
// fixed either way, so its running sums are too. Chunk starts are multiples of the chunk size,
// itself a multiple of kILP, so a tensor is either aligned in all its chunks or in none.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cuda/block_reduce.cuh"
#include "cuda/device_table.h"
#include "cuda/launch_config.h"
#include "fusedopt/dtype.h"

namespace fusedopt::cuda {

/// Device-side reader of a table (Note [device table]); passed to kernels by value.
struct TableView {
  const int64_t* table;
  TableLayout layout;

  __host__ __device__ __forceinline__ int64_t n_tensors() const { return layout.n_tensors; }
  __host__ __device__ __forceinline__ int64_t n_chunks() const { return layout.n_chunks; }

  /// Row `row` of tensor k: a data pointer (or a dtype code).
  __device__ __forceinline__ int64_t row(int row, int64_t k) const {
    return table[layout.row_offset(row) + k];
  }
  template <class T>
  __device__ __forceinline__ T* pointer(int r, int64_t k) const {
    return reinterpret_cast<T*>(row(r, k));
  }
  /// Tensor k owns chunks [first_chunk(k), first_chunk(k + 1)).
  __device__ __forceinline__ int64_t first_chunk(int64_t k) const {
    return table[layout.first_chunk_offset() + k];
  }
  __device__ __forceinline__ ChunkRange chunk(int64_t c) const {
    return layout.chunk_range(table, c);
  }
};

// ---- W consecutive elements of one stream, loaded to and stored from opmath ----------------

/// The unsigned word of `Bytes` bytes that one global access moves (a vector type from 8 on;
/// no other size exists, so a wider access cannot compile).
template <int Bytes>
struct Word;
template <>
struct Word<2> {
  using type = unsigned short;
};
template <>
struct Word<4> {
  using type = unsigned int;
};
template <>
struct Word<8> {
  using type = uint2;
};
template <>
struct Word<16> {
  using type = uint4;
};

/// Note [streaming access]: every element of a step is read once and written once, so stream
/// data is accessed with the evict-first hints (ld.global.cs / st.global.cs), each vector of
/// one stream in one access of at most kVectorBytes (vector_width, launch_config.h).
template <int Bytes>
__device__ __forceinline__ void load_words(void* dst, const void* src) {
  using W = typename Word<Bytes>::type;
  const W w = __ldcs(static_cast<const W*>(src));
  memcpy(dst, &w, Bytes);
}

template <int Bytes>
__device__ __forceinline__ void store_words(void* dst, const void* src) {
  using W = typename Word<Bytes>::type;
  W w;
  memcpy(&w, src, Bytes);
  __stcs(static_cast<W*>(dst), w);
}

/// Load s[0..W) as opmath T. W > 1 only on the vector path: s is aligned to W elements.
template <int W, class T, class S>
__device__ __forceinline__ void load_elements(T (&out)[W], const S* s) {
  S v[W];
  load_words<int(sizeof(S)) * W>(v, s);
#pragma unroll
  for (int j = 0; j < W; ++j) {
    out[j] = load<T>(v[j]);
  }
}

/// Round in[0..W) to storage S (round to nearest even) and store them at s.
template <int W, class S, class T>
__device__ __forceinline__ void store_elements(S* s, const T (&in)[W]) {
  S v[W];
#pragma unroll
  for (int j = 0; j < W; ++j) {
    v[j] = narrow<S>(in[j]);
  }
  store_words<int(sizeof(S)) * W>(s, v);
}

/// Is p (a chunk start) on a boundary of W elements? (Note [vector path])
template <int W, class S>
__device__ __forceinline__ bool vector_aligned(const S* p) {
  return reinterpret_cast<uintptr_t>(p) % (sizeof(S) * W) == 0;
}

// ---- the engine ------------------------------------------------------------------------------

/// Run `op` over every chunk of `t` this block owns (Note [persistent grid]).
///
/// An operation provides:
///   kWidth                                 its vector width W (vector_width of its streams)
///   kSums, Acc                             running fp64 sums per thread (0: none), their kind
///                                          (PlainSum or CompensatedSum, block_reduce.cuh)
///   begin_tensor(t, k)                     when the block meets a new tensor (every thread)
///   begin_chunk(t, k, begin) -> bool       per-thread pointer set-up; true when the vector
///                                          path may run (Note [vector path])
///   apply<W>(i, Partials<kSums, Acc>&)     elements [i, i + W) of the chunk
/// With kSums > 0, the block's sums of chunk c are stored at partials[c * kSums + s].
template <class Op>
__device__ __forceinline__ void for_each_chunk(const TableView& t, Op& op, double* partials) {
  constexpr int kSums = Op::kSums;
  constexpr int W = Op::kWidth;
  using Acc = typename Op::Acc;
  int64_t current = -1;
  for (int64_t c = blockIdx.x; c < t.n_chunks(); c += gridDim.x) {
    const ChunkRange r = t.chunk(c);
    if (r.tensor != current) {
      op.begin_tensor(t, r.tensor);
      current = r.tensor;
    }
    const bool vector = op.begin_chunk(t, r.tensor, r.begin);
    const int64_t n = r.end - r.begin;
    Partials<kSums, Acc> acc;
    int64_t tail = 0;
    if (vector) {
      const int64_t vectors = n / W;
      for (int64_t v = threadIdx.x; v < vectors; v += kBlockSize) {
        op.template apply<W>(v * W, acc);
      }
      tail = vectors * W;
    }
#pragma unroll 1
    for (int64_t i = tail + threadIdx.x; i < n; i += kBlockSize) {
      op.template apply<1>(i, acc);
    }
    if constexpr (kSums > 0) {
      const Partials<kSums, Acc> sums = block_sum<kBlockSize>(acc);
      if (threadIdx.x == 0) {
        for (int s = 0; s < kSums; ++s) {
          partials[c * kSums + s] = sums.v[s].value();
        }
      }
    }
  }
}

}  // namespace fusedopt::cuda
