// Test hooks on the stochastic-rounding math (csrc/binding_rounding.cpp).
#pragma once

#include <pybind11/pybind11.h>

namespace fusedopt::binding {

void bind_rounding(pybind11::module_& m);

}  // namespace fusedopt::binding
