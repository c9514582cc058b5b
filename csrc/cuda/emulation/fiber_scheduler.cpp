// Fibers on ucontext (POSIX): each emulated thread has its own stack and runs until it waits
// at a barrier or returns; the scheduler then runs the next one. Single-threaded by design.
#include "cuda/emulation/fiber_scheduler.h"

#include <ucontext.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/emulation/cuda_emulation.h"

namespace fusedopt::cuda::emulation {

dim3 thread_index, block_index, grid_dim, block_dim;

namespace {

constexpr size_t kStackBytes = size_t(128) << 10;
constexpr unsigned kWarp = 32;

enum class State { kRunnable, kAtBlockBarrier, kAtWarpBarrier, kDone };

struct Fiber {
  ucontext_t context;
  State state;
};

/// The block being run (the emulator runs one block at a time, from one host thread).
struct Block {
  ucontext_t scheduler;
  std::vector<Fiber> fibers;
  std::vector<std::unique_ptr<char[]>> stacks;  // kept across launches
  std::vector<uint64_t> exchange;               // one 8-byte slot per thread (warp shuffles)
  unsigned current = 0;
  void (*body)(const void*) = nullptr;
  const void* args = nullptr;
};

Block block;

void fiber_main() {
  block.body(block.args);
  block.fibers[block.current].state = State::kDone;
  // returning resumes the scheduler (uc_link)
}

void start_fibers(unsigned threads) {
  while (block.stacks.size() < threads) {
    block.stacks.emplace_back(new char[kStackBytes]);
  }
  block.fibers.assign(threads, Fiber{});
  block.exchange.assign((threads + kWarp - 1) / kWarp * kWarp, 0);
  for (unsigned t = 0; t < threads; ++t) {
    Fiber& f = block.fibers[t];
    if (getcontext(&f.context) != 0) {
      throw std::runtime_error("fusedopt CUDA emulation: getcontext failed");
    }
    f.context.uc_stack.ss_sp = block.stacks[t].get();
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = &block.scheduler;
    makecontext(&f.context, fiber_main, 0);
    f.state = State::kRunnable;
  }
}

void switch_to(unsigned t) {
  block.current = t;
  thread_index.x = t;
  swapcontext(&block.scheduler, &block.fibers[t].context);
}

/// Run the threads of warp w until each has finished or waits at __syncthreads(): its lanes in
/// turn, releasing them together from every warp shuffle.
void run_warp(unsigned w, unsigned threads, bool forward) {
  const unsigned first = w * kWarp;
  const unsigned count = threads - first < kWarp ? threads - first : kWarp;
  while (true) {
    for (unsigned i = 0; i < count; ++i) {
      const unsigned t = first + (forward ? i : count - 1 - i);
      if (block.fibers[t].state == State::kRunnable) {
        switch_to(t);
      }
    }
    unsigned live = 0, at_shuffle = 0;
    for (unsigned t = first; t < first + count; ++t) {
      live += block.fibers[t].state != State::kDone;
      at_shuffle += block.fibers[t].state == State::kAtWarpBarrier;
    }
    if (at_shuffle == 0) {
      return;
    }
    if (at_shuffle != live) {
      throw std::logic_error("fusedopt CUDA emulation: block " +
                             std::to_string(block_index.x) + ", warp " + std::to_string(w) +
                             ": some lanes wait at a shuffle the others never reach");
    }
    for (unsigned t = first; t < first + count; ++t) {
      if (block.fibers[t].state == State::kAtWarpBarrier) {
        block.fibers[t].state = State::kRunnable;
      }
    }
  }
}

/// Between two __syncthreads() the warps of a block are independent: each runs as far as it
/// can before the next one starts, in forward then reverse warp order, so that a warp reading
/// shared memory another warp writes without a barrier in between reads it too early or too
/// late in one of the two orders.
void run_block(unsigned threads) {
  start_fibers(threads);
  const unsigned warps = (threads + kWarp - 1) / kWarp;
  for (bool forward = true;; forward = !forward) {
    for (unsigned i = 0; i < warps; ++i) {
      run_warp(forward ? i : warps - 1 - i, threads, forward);
    }
    unsigned live = 0;
    for (Fiber& f : block.fibers) {
      if (f.state == State::kAtBlockBarrier) {
        f.state = State::kRunnable;  // every live thread is here: the barrier opens
      }
      live += f.state != State::kDone;
    }
    if (live == 0) {
      return;
    }
  }
}

}  // namespace

void barrier(bool warp_only) {
  Fiber& f = block.fibers[block.current];
  f.state = warp_only ? State::kAtWarpBarrier : State::kAtBlockBarrier;
  swapcontext(&f.context, &block.scheduler);
}

void* exchange_slot(unsigned lane) {
  const unsigned warp_base = block.current / kWarp * kWarp;
  return &block.exchange[warp_base + lane];
}

void run_grid(unsigned grid, unsigned threads, void (*body)(const void*), const void* args) {
  if (threads == 0 || threads > kMaxThreads) {
    throw std::invalid_argument("fusedopt CUDA emulation: bad block size");
  }
  block.body = body;
  block.args = args;
  grid_dim.x = grid;
  block_dim.x = threads;
  for (unsigned b = 0; b < grid; ++b) {
    block_index.x = b;
    run_block(threads);
  }
}

}  // namespace fusedopt::cuda::emulation
