// What the two pybind11 modules share (csrc/binding.cpp: _C, the CPU core; csrc/cuda/
// binding_cuda.cpp: _C_cuda, the CUDA core): argument conversion and the update calls of the
// kernel contract, defined once for either core's table type.
//
// def_update_calls<Table, Exec>(m) binds adam_step, elementwise_step, sgd_step and
// momentum_step for a core whose entry points take (const Table&, double* stats, call,
// Exec) — Exec is the CPU core's thread count or the CUDA core's stream handle. The calls are
// found by argument-dependent lookup in the table's namespace (fusedopt::cpu or
// fusedopt::cuda), so a new contract call is added here once for both modules.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "fusedopt/calls.h"
#include "fusedopt/dtype.h"
#include "fusedopt/stats.h"
#include "math/algorithms.h"

namespace fusedopt::binding {

namespace py = pybind11;

inline DType as_dtype(int code) {
  if (code < 0 || code > 3) {
    throw py::value_error("fusedopt: unknown dtype code " + std::to_string(code));
  }
  return DType(code);
}

template <class T>
T* as_pointer(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

template <class T>
std::vector<T*> as_pointers(const std::vector<uintptr_t>& ptrs) {
  std::vector<T*> out(ptrs.size());
  for (size_t i = 0; i < ptrs.size(); ++i) {
    out[i] = reinterpret_cast<T*>(ptrs[i]);
  }
  return out;
}

/// A float lr (lr_ptr 0) or a 0-d fp32/fp64 tensor lr behind lr_ptr.
inline LearningRate as_lr(double lr, uintptr_t lr_ptr, int lr_dtype) {
  const DType dtype = as_dtype(lr_dtype);
  if (lr_ptr != 0 && dtype != DType::kFloat32 && dtype != DType::kFloat64) {
    throw py::value_error("fusedopt: a tensor lr must be fp32 or fp64");
  }
  return {lr, as_pointer<const void>(lr_ptr), dtype};
}

/// The call of element-wise algorithm `name` (its code: the index in math/algorithms.h).
inline ElementwiseCall elementwise_call(const std::string& name, LearningRate lr,
                                        const std::vector<double>& hyper, bool use_prologue,
                                        bool telemetry, bool maximize) {
  ElementwiseCall call{};
  call.algorithm = -1;
  for (int a = 0; a < math::kNumElementwiseAlgorithms; ++a) {
    if (name == math::kElementwiseAlgorithms[a].name) call.algorithm = a;
  }
  if (call.algorithm < 0) {
    throw py::value_error("fusedopt: no element-wise algorithm '" + name + "' in this build");
  }
  if (hyper.size() > size_t(math::kMaxHyper)) {
    throw py::value_error("fusedopt: at most " + std::to_string(math::kMaxHyper) +
                          " hyperparameters");
  }
  call.lr = lr;
  for (size_t i = 0; i < hyper.size(); ++i) call.hyper[i] = hyper[i];
  call.n_hyper = int(hyper.size());
  call.use_prologue = use_prologue;
  call.telemetry = telemetry;
  call.maximize = maximize;
  return call;
}

/// {name: (states, hyperparameters, scalars)} of every element-wise algorithm built in.
inline py::dict elementwise_algorithms() {
  py::dict d;
  for (const math::ElementwiseInfo& a : math::kElementwiseAlgorithms) {
    d[py::str(a.name)] = py::make_tuple(a.states, a.hyper, a.scalars);
  }
  return d;
}

/// The stats slots (fusedopt/stats.h) by name: python/fusedopt/_stats.py is checked against it.
inline py::dict stats_slots() {
  py::dict slots;
  slots["GRAD_SQ"] = kSlotGradSq;
  slots["GRAD_NORM"] = kSlotGradNorm;
  slots["FOUND_INF"] = kSlotFoundInf;
  slots["CLIP_COEF"] = kSlotClipCoef;
  slots["COEF"] = kSlotCoef;
  slots["UPDATE_SQ"] = kSlotUpdateSq;
  slots["PARAM_SQ"] = kSlotParamSq;
  slots["STEP_GRAD_SQ"] = kSlotStepGradSq;
  slots["AUX"] = kSlotAux;
  slots["SCALE"] = kSlotScale;
  slots["ABC"] = kSlotAbc;
  slots["MOMENTUM_SQ"] = kSlotMomentumSq;
  slots["LR_INVALID"] = kSlotLrInvalid;
  slots["PREV_PARAM_SQ"] = kSlotPrevParamSq;
  slots["NUM_SLOTS"] = kNumSlots;
  return slots;
}

/// The update calls of the kernel contract for a core with table type Table and execution
/// context Exec (threads or stream), each releasing the GIL while it runs.
template <class Table, class Exec>
void def_update_calls(py::module_& m) {
  using py::gil_scoped_release;
  m.def("adam_step",
        [](const Table& t, uintptr_t stats, double lr, uintptr_t lr_ptr, int lr_dtype,
           double beta1, double beta2, double eps, double weight_decay, int variant,
           bool coupled_decay, bool bias_correction, bool use_prologue, bool use_abc,
           bool telemetry, bool maximize, Exec exec) {
          if (variant < 0 || variant > int(AdamVariant::kYogi)) {
            throw py::value_error("fusedopt: unknown Adam variant code");
          }
          const AdamCall call{as_lr(lr, lr_ptr, lr_dtype), beta1,           beta2,
                              eps,                         weight_decay,    AdamVariant(variant),
                              coupled_decay,               bias_correction, use_prologue,
                              use_abc,                     telemetry,       maximize};
          gil_scoped_release release;
          adam_step(t, as_pointer<double>(stats), call, exec);
        },
        "Adam-family update of one bucket.");

  m.def("elementwise_step",
        [](const Table& t, uintptr_t stats, const std::string& algorithm, double lr,
           uintptr_t lr_ptr, int lr_dtype, const std::vector<double>& hyper, bool use_prologue,
           bool telemetry, bool maximize, Exec exec) {
          const ElementwiseCall call = elementwise_call(
              algorithm, as_lr(lr, lr_ptr, lr_dtype), hyper, use_prologue, telemetry, maximize);
          gil_scoped_release release;
          elementwise_step(t, as_pointer<double>(stats), call, exec);
        },
        "An element-wise algorithm's update of one bucket (math/elementwise.h).");

  m.def("sgd_step",
        [](const Table& t, uintptr_t stats, bool momentum_direction, bool use_prologue,
           bool telemetry, bool maximize, Exec exec) {
          gil_scoped_release release;
          sgd_step(t, as_pointer<double>(stats),
                   SgdCall{momentum_direction, use_prologue, telemetry, maximize}, exec);
        },
        "p <- p - stats[SCALE] * d of one bucket.");

  m.def("momentum_step",
        [](const Table& t, uintptr_t stats, double rho, bool use_prologue, bool maximize,
           Exec exec) {
          gil_scoped_release release;
          momentum_step(t, as_pointer<double>(stats), rho, use_prologue, maximize, exec);
        },
        "NSGDm momentum pass of one bucket.");

  m.def("elementwise_algorithms", &elementwise_algorithms,
        "{name: (states, hyperparameters, scalars)} of the element-wise algorithms built in.");
  m.attr("STATS_SLOTS") = stats_slots();
}

}  // namespace fusedopt::binding
