// fusedopt._C's hooks on the stochastic-rounding math (csrc/math/philox.h,
// csrc/math/stochastic_round.h), for the tests that hold it bit for bit to
// python/fusedopt/reference/philox.py and rounding.py before any kernel uses it (issue 20).
// Plain lists in and out: these are checks, not a data path.
#include "binding_rounding.h"

#include <pybind11/stl.h>

#include <cstdint>
#include <vector>

#include "fusedopt/dtype.h"
#include "math/philox.h"
#include "math/stochastic_round.h"

namespace py = pybind11;

namespace fusedopt::binding {

void bind_rounding(py::module_& m) {
  m.def(
      "philox4x32",
      [](uint64_t seed, const std::vector<uint32_t>& c0, const std::vector<uint32_t>& c1,
         const std::vector<uint32_t>& c2, const std::vector<uint32_t>& c3) {
        const size_t n = c0.size();
        if (c1.size() != n || c2.size() != n || c3.size() != n) {
          throw py::value_error("philox4x32: four counter lists of one length");
        }
        std::vector<uint32_t> x0(n), x1(n), x2(n), x3(n);
        for (size_t i = 0; i < n; ++i) {
          const math::PhiloxOut o = math::philox4x32(seed, c0[i], c1[i], c2[i], c3[i]);
          x0[i] = o.x0;
          x1[i] = o.x1;
          x2[i] = o.x2;
          x3[i] = o.x3;
        }
        return py::make_tuple(x0, x1, x2, x3);
      },
      py::arg("seed"), py::arg("c0"), py::arg("c1"), py::arg("c2"), py::arg("c3"),
      "Philox4x32-10 of each counter (c0[i], c1[i], c2[i], c3[i]) under the key seed.");
  m.def(
      "element_randoms",
      [](uint64_t seed, uint32_t pid, uint32_t step, uint64_t offset, uint64_t numel) {
        std::vector<uint32_t> out(numel);
        for (uint64_t i = 0; i < numel; ++i) {
          out[i] = math::element_random(seed, offset + i, pid, step);
        }
        return out;
      },
      py::arg("seed"), py::arg("pid"), py::arg("step"), py::arg("offset"), py::arg("numel"),
      "The rounding words of elements offset .. offset + numel - 1 of param pid at step.");
  m.def(
      "stochastic_round",
      [](const std::vector<uint32_t>& x_bits, const std::vector<uint32_t>& r, int dtype) {
        if (r.size() != x_bits.size()) throw py::value_error("one random word per value");
        if (dtype != int(DType::kBFloat16) && dtype != int(DType::kFloat16)) {
          throw py::value_error("stochastic_round: dtype code of bf16 or fp16");
        }
        std::vector<uint16_t> out(x_bits.size());
        for (size_t i = 0; i < out.size(); ++i) {
          const float x = bits_float(x_bits[i]);
          out[i] = dtype == int(DType::kBFloat16) ? math::float_to_bf16_bits_sr(x, r[i])
                                                  : math::float_to_fp16_bits_sr(x, r[i]);
        }
        return out;
      },
      py::arg("x_bits"), py::arg("r"), py::arg("dtype"),
      "16-bit patterns of fp32 values (given as bit patterns) rounded stochastically.");
}

}  // namespace fusedopt::binding
