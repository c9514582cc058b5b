// Portability macros shared by every C++ layer (CPU now, CUDA next).
//
// FUSEDOPT_HD marks a function callable from host and device code: `__host__ __device__` under
// nvcc (or hipcc), nothing under a plain host compiler, so the math headers compile with g++.
// FUSEDOPT_INLINE forces inlining. On the CPU this is load-bearing, not a hint: the kernel
// translation units are compiled once per ISA (generic, AVX2, AVX-512) and every header function
// they use must be inlined into them. An out-of-line copy would be an identical-looking weak
// symbol in three objects, the linker would keep one (perhaps the AVX-512 one), and the generic
// path would run AVX-512 code on a machine without it (Note [one ISA per translation unit],
// csrc/cpu/isa.h).
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define FUSEDOPT_HD __host__ __device__
#define FUSEDOPT_INLINE __host__ __device__ __forceinline__
#define FUSEDOPT_INLINE_LAMBDA
#else
#define FUSEDOPT_HD
#define FUSEDOPT_INLINE inline __attribute__((always_inline))
// For the lambdas of a kernel's element loop: in a translation unit with hundreds of
// instantiations GCC's inlining budget runs out, a loop body stays a call, and the loop is not
// vectorized (measured: 441 of 582 AVX-512 chunk loops were scalar before this).
#define FUSEDOPT_INLINE_LAMBDA __attribute__((always_inline))
#endif

#define FUSEDOPT_RESTRICT __restrict__
