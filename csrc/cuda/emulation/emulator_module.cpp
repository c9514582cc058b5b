// The emulated module's extra Python functions (emulator_module.h).
#include "cuda/emulation/emulator_module.h"

#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>

#include "cuda/block_reduce.cuh"
#include "cuda/emulation/fiber_scheduler.h"
#include "cuda/launch.cuh"
#include "cuda/multi_tensor_apply.cuh"

namespace py = pybind11;

namespace fusedopt::cuda::emulation {
namespace {

struct VectorArgs {
  uintptr_t address;
  bool store;
};

/// Thread 0 does one 16-byte streaming access at `address`: the engine's vector path
/// (load_words / store_words, Note [streaming access]) on an address the test chooses.
__global__ void vector_access_kernel(const VectorArgs a) {
  if (threadIdx.x != 0) {
    return;
  }
  unsigned char bytes[16];
  load_words<16>(bytes, reinterpret_cast<const void*>(a.address));
  if (a.store) {
    store_words<16>(reinterpret_cast<void*>(a.address), bytes);
  }
}

struct ShuffleArgs {
  double* out;
  unsigned exited;
};

/// One warp: lanes below `exited` return, the others sum by the fixed tree (a full-mask
/// __shfl_down_sync, block_reduce.cuh). Defined only for exited == 0.
__global__ void shuffle_kernel(const ShuffleArgs a) {
  if (threadIdx.x < a.exited) {
    return;
  }
  const PlainSum s = warp_sum(PlainSum{double(threadIdx.x)});
  if (threadIdx.x == a.exited) {
    *a.out = s.value();
  }
}

}  // namespace

void add_emulator_functions(py::module_& m) {
  m.def("launch_log",
        []() {
          py::list out;
          for (const Launch& l : launch_log()) {
            py::dict d;
            d["name"] = l.name;
            d["device"] = l.device;
            d["stream"] = l.stream;
            d["grid"] = l.grid;
            d["threads"] = l.threads;
            out.append(d);
          }
          return out;
        },
        "The launches since clear_launch_log (kernel name, device, stream, grid, threads).");
  m.def("clear_launch_log", &clear_launch_log);
  m.def("selftest_vector_access",
        [](uintptr_t address, bool store, int device) {
          DeviceGuard guard(device);
          launch_kernel<&vector_access_kernel, 32>(1, 0, VectorArgs{address, store},
                                                   "vector_access_kernel");
        },
        py::arg("address"), py::arg("store"), py::arg("device") = 0,
        "Test only: one 16-byte streaming load (and store) at `address`.");
  m.def("selftest_shuffle",
        [](unsigned exited) {
          if (exited >= 32) {
            throw py::value_error("exited must be < 32");
          }
          double out = -1.0;
          DeviceGuard guard(0);
          launch_kernel<&shuffle_kernel, 32>(1, 0, ShuffleArgs{&out, exited}, "shuffle_kernel");
          return out;
        },
        py::arg("exited"),
        "Test only: a one-warp full-mask shuffle sum after `exited` lanes returned.");
}

}  // namespace fusedopt::cuda::emulation
