// Which storage combinations the CUDA kernels are instantiated for: the manifest of
// csrc/dispatch/switch.h (FUSEDOPT_DTYPE_SETS), shared with the CPU core.
#pragma once

#include "cuda/api.h"

namespace fusedopt::cuda {

/// Throws std::invalid_argument when the table's dtypes are not instantiated.
void check_dtypes(const Table& t);

}  // namespace fusedopt::cuda
