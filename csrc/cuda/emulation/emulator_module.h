// The emulated module's extra Python functions (Note [CUDA emulation], cuda_emulation.h): the
// launch log, and test-only kernels that prove the emulator sees what a GPU faults on.
#pragma once

#include <pybind11/pybind11.h>

namespace fusedopt::cuda::emulation {

/// Adds launch_log, clear_launch_log, selftest_vector_access and selftest_shuffle to `m`.
void add_emulator_functions(pybind11::module_& m);

}  // namespace fusedopt::cuda::emulation
