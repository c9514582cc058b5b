#include "cuda/dtype_check.h"

#include <stdexcept>

#include "dispatch/switch.h"

namespace fusedopt::cuda {

bool supports_dtypes(DType param, DType grad, DType state, bool master) {
  return dispatch::switch_dtype_set(param, grad, state, master, [](auto) {});
}

void check_dtypes(const Table& t) {
  if (!supports_dtypes(t.param_dtype, t.grad_dtype, t.state_dtype, t.master)) {
    throw std::invalid_argument("fusedopt: no CUDA kernel for this combination of param, grad "
                                "and state dtypes (see csrc/dispatch/switch.h)");
  }
}

}  // namespace fusedopt::cuda
