#include "cpu/tensor_table.h"

#include <stdexcept>
#include <string>
#include <utility>

namespace fusedopt::cpu {
namespace {

void check_rows(const char* what, size_t rows, size_t n) {
  if (rows != n) {
    throw std::invalid_argument(std::string("fusedopt: ") + what + " has " +
                                std::to_string(rows) + " entries, expected " + std::to_string(n));
  }
}

}  // namespace

TensorTable::TensorTable(std::vector<int64_t> numel_, std::vector<void*> param_,
                         std::vector<void*> grad_, std::vector<void*> master_,
                         std::array<std::vector<void*>, kMaxStates> state_,
                         std::vector<float*> step_, DType param_dtype_, DType grad_dtype_,
                         DType state_dtype_, int64_t chunk_size)
    : numel(std::move(numel_)),
      param(std::move(param_)),
      grad(std::move(grad_)),
      master(std::move(master_)),
      state(std::move(state_)),
      step(std::move(step_)),
      param_dtype(param_dtype_),
      grad_dtype(grad_dtype_),
      state_dtype(state_dtype_),
      plan(numel, chunk_size) {
  const size_t n = numel.size();
  check_rows("param", param.size(), n);
  check_rows("grad", grad.size(), n);
  check_rows("step", step.size(), n);
  if (!master.empty()) {
    check_rows("master", master.size(), n);
  }
  for (const auto& s : state) {
    if (!s.empty()) {
      check_rows("state", s.size(), n);
    }
  }
}

GradList::GradList(std::vector<int64_t> numel_, std::vector<const void*> ptr_,
                   std::vector<DType> dtype_, int64_t chunk_size)
    : numel(std::move(numel_)), ptr(std::move(ptr_)), dtype(std::move(dtype_)),
      opmath64(false), plan(numel, chunk_size) {
  check_rows("grad pointers", ptr.size(), numel.size());
  check_rows("grad dtypes", dtype.size(), numel.size());
  for (DType d : dtype) {
    opmath64 = opmath64 || d == DType::kFloat64;
  }
}

}  // namespace fusedopt::cpu
