// The step signature: what every kernel of a step will read, re-checked in one native call
// (Note [step signature] in step_signature.cpp). Part of the bindings layer: it reads Python
// tensor objects through torch's C shim and includes no torch header.
#pragma once

#include <pybind11/pybind11.h>

namespace fusedopt::binding {

// Adds load_torch_shim(), tensor_meta() and StepSignature to module `m`.
void bind_step_signature(pybind11::module_& m);

}  // namespace fusedopt::binding
