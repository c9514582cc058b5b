// Fibers on ucontext (POSIX): each emulated thread has its own stack and runs until it waits
// at a barrier or returns; the scheduler then runs the next one. Single-threaded by design.
#include "cuda/emulation/fiber_scheduler.h"

#include <ucontext.h>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/emulation/cuda_emulation.h"

namespace fusedopt::cuda::emulation {

dim3 thread_index, block_index, grid_dim, block_dim;
int current_device = -1;

namespace {

constexpr size_t kStackBytes = size_t(128) << 10;
constexpr unsigned kWarp = 32;

enum class State { kRunnable, kAtBlockBarrier, kAtWarpBarrier, kDone };

struct Fiber {
  ucontext_t context;
  State state;
  unsigned mask;  // the shuffle mask it waits with (kAtWarpBarrier)
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
  std::exception_ptr error;  // what a thread threw (it cannot unwind into the scheduler)
};

Block block;
std::vector<Launch> log;

void fiber_main() {
  try {
    block.body(block.args);
  } catch (...) {
    block.error = std::current_exception();
  }
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

/// Run thread t until it waits or returns; rethrow what it threw (the launch stops there: the
/// other threads' stacks are abandoned, and reset by the next launch).
void switch_to(unsigned t) {
  block.current = t;
  thread_index.x = t;
  swapcontext(&block.scheduler, &block.fibers[t].context);
  if (block.error) {
    std::exception_ptr e = block.error;
    block.error = nullptr;
    std::rethrow_exception(e);
  }
}

std::string where(unsigned w) {
  return "fusedopt CUDA emulation: block " + std::to_string(block_index.x) + ", warp " +
         std::to_string(w);
}

/// The lanes waiting at a shuffle must all be in every waiting lane's mask, and every lane of
/// a mask must be waiting: a lane of the mask that has exited (or is past the block) leaves the
/// shuffle undefined on a GPU (a full-mask __shfl_down_sync after an early return).
void check_shuffle(unsigned w, unsigned first, unsigned count) {
  for (unsigned t = first; t < first + count; ++t) {
    const Fiber& f = block.fibers[t];
    if (f.state != State::kAtWarpBarrier) {
      continue;
    }
    for (unsigned lane = 0; lane < kWarp; ++lane) {
      if ((f.mask >> lane & 1u) == 0) {
        continue;
      }
      const bool exists = lane < count;
      if (!exists || block.fibers[first + lane].state != State::kAtWarpBarrier) {
        char mask[16];
        std::snprintf(mask, sizeof mask, "0x%08x", f.mask);
        throw std::logic_error(where(w) + ": lane " + std::to_string(t - first) +
                               " shuffles with mask " + mask + " but lane " +
                               std::to_string(lane) +
                               (exists ? " has exited" : " does not exist") +
                               " (undefined on a GPU)");
      }
    }
  }
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
      throw std::logic_error(where(w) + ": some lanes wait at a shuffle the others never reach");
    }
    check_shuffle(w, first, count);
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
  f.mask = ~0u;
  swapcontext(&f.context, &block.scheduler);
}

void shuffle_barrier(unsigned mask) {
  Fiber& f = block.fibers[block.current];
  f.state = State::kAtWarpBarrier;
  f.mask = mask;
  swapcontext(&f.context, &block.scheduler);
}

void check_aligned(const void* p, size_t bytes, const char* what) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  if (address % bytes != 0) {
    char text[32];
    std::snprintf(text, sizeof text, "0x%llx", static_cast<unsigned long long>(address));
    throw std::logic_error("fusedopt CUDA emulation: block " + std::to_string(block_index.x) +
                           ", thread " + std::to_string(thread_index.x) + ": " + what + " of " +
                           std::to_string(bytes) + " bytes at " + text +
                           ", not a multiple of " + std::to_string(bytes) +
                           " (misaligned address on a GPU)");
  }
}

void record_launch(const char* name, unsigned grid, unsigned threads, uintptr_t stream) {
  if (current_device < 0) {
    throw std::logic_error(std::string("fusedopt CUDA emulation: ") + name +
                           " launched outside a DeviceGuard (on a GPU it would run on whatever "
                           "device is current)");
  }
  if (log.size() >= kMaxLogged) {
    log.erase(log.begin(), log.begin() + long(kMaxLogged / 2));
  }
  log.push_back({name, current_device, stream, grid, threads});
}

const std::vector<Launch>& launch_log() { return log; }

void clear_launch_log() { log.clear(); }

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
