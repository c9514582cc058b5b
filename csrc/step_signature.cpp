// Note [step signature]: a step hands the kernels raw pointers, so before each step the
// optimizer must know that every tensor is still what its plan validated: the same param
// objects in the same groups, and for every param, state, master, step count and grad the same
// address, dtype, sizes, strides, device and layout (a `p.data = ...` swap keeps the Python
// object and changes all of these). Read from Python that is ~120 ns per attribute per tensor
// (~0.6 ms for GPT-2 small's 148 params with their states and fresh grads); here it is one
// call that reads each tensor's TensorImpl through torch's C shim at a few ns per field.
//
// How the metadata is read without torch headers: libtorch exports a stable C ABI (the
// AOTInductor shim, torch/csrc/inductor/aoti_torch/c/shim.h: aoti_torch_get_data_ptr,
// _get_sizes, _get_strides, _get_dtype, ...) taking an AtenTensorHandle, which is an
// at::Tensor*. An at::Tensor is one pointer, to its TensorImpl, and a Python tensor's `_cdata`
// is that TensorImpl's address; so the address of a word holding `_cdata` is a valid handle
// for the read-only getters (they neither copy nor free it). load_torch_shim() resolves the
// functions with dlsym from the libtorch_cpu already loaded and checks that layout on a real
// handle made by torch (torch._C._aoti.unsafe_alloc_void_ptr_from_tensor) before any getter
// is called; without the shim, or if that check fails, the optimizer keeps its Python check.
//
// A TensorImpl keeps its address for the life of its Python object (`.data` assignment
// changes the impl's storage and metadata in place), so the impls of the tensors the plan
// holds (params, states, masters, steps) are read once; grads are looked up from their params
// every step (the plan keeps no grad alive) and their impls read then.
#include "step_signature.h"

#include <pybind11/stl.h>

#include <dlfcn.h>

#include <cstdint>
#include <string>
#include <vector>

namespace py = pybind11;

namespace fusedopt::binding {
namespace {

using Handle = void*;  // AtenTensorHandle
using Err = int32_t;   // AOTITorchError: 0 is success

struct Shim {
  Err (*data_ptr)(Handle, void**) = nullptr;
  Err (*dim)(Handle, int64_t*) = nullptr;
  Err (*sizes)(Handle, int64_t**) = nullptr;
  Err (*strides)(Handle, int64_t**) = nullptr;
  Err (*dtype)(Handle, int32_t*) = nullptr;
  Err (*device_type)(Handle, int32_t*) = nullptr;
  Err (*device_index)(Handle, int32_t*) = nullptr;
  Err (*layout)(Handle, int32_t*) = nullptr;
  Err (*delete_tensor)(Handle) = nullptr;
  PyTypeObject* tensor_type = nullptr;  // torch._C.TensorBase
  PyObject* cdata_descr = nullptr;       // its `_cdata` getter (a reference never released)
  // dtype code -> torch.dtype (for signature()); a strong reference never released, so that
  // no Python object is destroyed with this static after the interpreter is gone
  PyObject* dtypes = nullptr;
  bool ready = false;
};

Shim g_shim;

// What a kernel reads of a tensor besides its values.
struct Meta {
  uintptr_t ptr = 0;
  int32_t dtype = -1, device_type = -1, device_index = -1, layout = -1;
  std::vector<int64_t> shape;  // the sizes, then the strides
};

enum class Diff { same, moved, other };  // moved: only the address differs

// Reads `impl`'s metadata through the shim; false when torch refuses (a tensor without
// storage, symbolic sizes: the Python path then decides).
bool read_meta(void* impl, Meta& m) {
  void* slot = impl;  // an at::Tensor (checked by load_torch_shim)
  Handle h = &slot;
  void* ptr = nullptr;
  int64_t dim = 0;
  int64_t* sizes = nullptr;
  int64_t* strides = nullptr;
  if (g_shim.layout(h, &m.layout) || g_shim.data_ptr(h, &ptr) || g_shim.dim(h, &dim) ||
      g_shim.sizes(h, &sizes) || g_shim.strides(h, &strides) || g_shim.dtype(h, &m.dtype) ||
      g_shim.device_type(h, &m.device_type) || g_shim.device_index(h, &m.device_index)) {
    return false;
  }
  m.ptr = uintptr_t(ptr);
  m.shape.assign(sizes, sizes + dim);
  m.shape.insert(m.shape.end(), strides, strides + dim);
  return true;
}

// Compares `impl` with `want` without allocating; the current address goes to `*ptr`. With
// `placed` (a tensor the plan holds, which only a `.data` assignment can change) the device
// type and layout are not read: `.data` refuses another device type or layout (it accepts
// another index of the same device type, another dtype, shape, strides or storage).
Diff compare(void* impl, const Meta& want, uintptr_t* ptr, bool placed) {
  void* slot = impl;
  Handle h = &slot;
  void* p = nullptr;
  int64_t dim = 0;
  int64_t* sizes = nullptr;
  int64_t* strides = nullptr;
  int32_t dtype = 0;
  if (g_shim.dtype(h, &dtype) || g_shim.dim(h, &dim) || dtype != want.dtype ||
      size_t(2 * dim) != want.shape.size()) {
    return Diff::other;
  }
  int32_t dev_index = 0;
  if (g_shim.device_index(h, &dev_index) || dev_index != want.device_index) return Diff::other;
  if (!placed) {
    int32_t dev_type = 0, layout = 0;
    if (g_shim.layout(h, &layout) || g_shim.device_type(h, &dev_type) ||
        layout != want.layout || dev_type != want.device_type) {
      return Diff::other;
    }
  }
  if (g_shim.sizes(h, &sizes) || g_shim.strides(h, &strides) || g_shim.data_ptr(h, &p)) {
    return Diff::other;
  }
  for (int64_t d = 0; d < dim; ++d) {
    if (sizes[d] != want.shape[d] || strides[d] != want.shape[dim + d]) return Diff::other;
  }
  *ptr = uintptr_t(p);
  return *ptr == want.ptr ? Diff::same : Diff::moved;
}

PyObject* cdata_name() {
  static PyObject* name = PyUnicode_InternFromString("_cdata");
  return name;
}

// Is `_cdata` of the objects of `type` torch's own getter (TensorBase's)? A subclass that
// redefined it could hand the shim any integer as a TensorImpl. Looked up once per type and
// version of its attribute table (CPython changes a type's tp_version_tag, to a value never
// used before, whenever its or a base's dict changes; 0 means no tag yet: look up again).
bool own_cdata(PyTypeObject* type) {
  struct Seen {
    PyTypeObject* type;
    unsigned int tag;
    bool ok;
  };
  static Seen seen[8] = {};
  static int next = 0;
  const unsigned int tag = type->tp_version_tag;
  if (tag != 0) {
    for (const Seen& s : seen) {
      if (s.type == type && s.tag == tag) return s.ok;
    }
  }
  PyObject* d = PyObject_GetAttr(reinterpret_cast<PyObject*>(type), cdata_name());
  const bool ok = d != nullptr && d == g_shim.cdata_descr;
  if (d == nullptr) PyErr_Clear();
  Py_XDECREF(d);
  if (tag != 0 && type->tp_version_tag == tag) {
    seen[next] = {type, tag, ok};
    next = (next + 1) % 8;
  }
  return ok;
}

// The TensorImpl address of a tensor object (its `_cdata`), or nullptr with no error set.
void* impl_of(PyObject* t) {
  if (!PyObject_TypeCheck(t, g_shim.tensor_type) || !own_cdata(Py_TYPE(t))) return nullptr;
  PyObject* v = PyObject_GetAttr(t, cdata_name());
  if (v == nullptr) {
    PyErr_Clear();
    return nullptr;
  }
  void* impl = PyLong_AsVoidPtr(v);
  Py_DECREF(v);
  if (impl == nullptr) PyErr_Clear();
  return impl;
}

void* checked_impl(PyObject* t, const char* what) {
  void* impl = impl_of(t);
  if (impl == nullptr) {
    throw py::value_error(std::string("fusedopt StepSignature: a ") + what +
                          " is not a tensor with a TensorImpl");
  }
  return impl;
}

void require_shim() {
  if (!g_shim.ready) throw py::value_error("fusedopt: load_torch_shim() has not succeeded");
}

template <typename F>
void resolve(void* lib, const char* name, F*& out) {
  void* sym = dlsym(lib, name);
  if (sym == nullptr) throw py::import_error(std::string("fusedopt: torch lacks ") + name);
  out = reinterpret_cast<F*>(sym);
}

// Resolves the shim in the loaded `libtorch_path` and checks, on `probe` and a handle torch
// made for it (`capsule`, freed here), that an at::Tensor is a pointer to its TensorImpl.
void load_torch_shim(const std::string& libtorch_path, py::object tensor_type,
                     py::object probe, py::capsule handle, py::dict dtypes) {
  void* lib = dlopen(libtorch_path.c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (lib == nullptr) throw py::import_error("fusedopt: " + libtorch_path + " is not loaded");
  Shim s;
  resolve(lib, "aoti_torch_get_data_ptr", s.data_ptr);
  resolve(lib, "aoti_torch_get_dim", s.dim);
  resolve(lib, "aoti_torch_get_sizes", s.sizes);
  resolve(lib, "aoti_torch_get_strides", s.strides);
  resolve(lib, "aoti_torch_get_dtype", s.dtype);
  resolve(lib, "aoti_torch_get_device_type", s.device_type);
  resolve(lib, "aoti_torch_get_device_index", s.device_index);
  resolve(lib, "aoti_torch_get_layout", s.layout);
  resolve(lib, "aoti_torch_delete_tensor_object", s.delete_tensor);
  dlclose(lib);  // RTLD_NOLOAD took a reference; torch keeps the library loaded
  if (!PyType_Check(tensor_type.ptr())) throw py::type_error("tensor_type must be a type");
  s.tensor_type = reinterpret_cast<PyTypeObject*>(tensor_type.ptr());
  s.cdata_descr = PyObject_GetAttr(tensor_type.ptr(), cdata_name());
  if (s.cdata_descr == nullptr) throw py::error_already_set();
  Handle real = handle.get_pointer<void>();
  Shim saved = g_shim;
  g_shim = s;  // impl_of needs the tensor type
  void* impl = impl_of(probe.ptr());
  g_shim = saved;
  bool layout_ok = impl != nullptr && *static_cast<void**>(real) == impl;
  s.delete_tensor(real);
  if (!layout_ok) {
    throw py::import_error(
        "fusedopt: this torch's at::Tensor is not a bare TensorImpl pointer; the step "
        "signature stays in Python");
  }
  s.dtypes = dtypes.release().ptr();
  s.ready = true;
  g_shim = s;
}

// (data_ptr, dtype code, device type, device index, layout, sizes, strides) as the shim reads
// them: for tests comparing them with what Python reads.
py::tuple tensor_meta(py::object t) {
  require_shim();
  Meta m;
  if (!read_meta(checked_impl(t.ptr(), "tensor"), m)) {
    throw py::value_error("fusedopt: torch's shim could not read this tensor");
  }
  size_t dim = m.shape.size() / 2;
  py::tuple sizes(dim), strides(dim);
  for (size_t d = 0; d < dim; ++d) {
    sizes[d] = m.shape[d];
    strides[d] = m.shape[dim + d];
  }
  return py::make_tuple(m.ptr, m.dtype, m.device_type, m.device_index, m.layout, sizes,
                        strides);
}

// (addresses, element counts, dtypes, strides) of `tensors`, each a tuple in order: what
// fusedopt._native.signature() computes in Python, at a tenth of the cost (Note [table cache]).
py::tuple signature(py::sequence tensors) {
  require_shim();
  size_t n = py::len(tensors);
  py::tuple ptrs(n), numels(n), dtypes(n), strides(n);
  Meta m;
  for (size_t i = 0; i < n; ++i) {
    py::object t = tensors[i];
    if (!read_meta(checked_impl(t.ptr(), "tensor"), m)) {
      throw py::value_error("fusedopt: torch's shim could not read a tensor");
    }
    size_t dim = m.shape.size() / 2;
    int64_t numel = 1;
    py::tuple st(dim);
    for (size_t d = 0; d < dim; ++d) {
      numel *= m.shape[d];
      st[d] = m.shape[dim + d];
    }
    py::object code = py::int_(m.dtype);
    PyObject* dtype = PyDict_GetItemWithError(g_shim.dtypes, code.ptr());  // borrowed
    if (dtype == nullptr) {
      PyErr_Clear();
      throw py::value_error("fusedopt: an unknown dtype code");
    }
    ptrs[i] = py::int_(m.ptr);
    numels[i] = py::int_(numel);
    dtypes[i] = py::reinterpret_borrow<py::object>(dtype);
    strides[i] = std::move(st);
  }
  return py::make_tuple(ptrs, numels, dtypes, strides);
}

class StepSignature {
 public:
  // groups: the optimizer's param_groups (dicts with a "params" list); watched: every tensor a
  // kernel reads besides the grads; kernel_index: per param in group order, its grad's
  // position in the step's kernel grads, or -1 for a param the step must find without a
  // grad; sharded: grads are DTensors whose `_local_tensor` the kernels read.
  StepSignature(py::list groups, py::list watched, std::vector<int64_t> kernel_index,
                bool sharded)
      : kernel_index_(std::move(kernel_index)), sharded_(sharded) {
    require_shim();
    for (py::handle g : groups) {
      PyObject* params = group_params(g.ptr());
      if (params == nullptr) throw py::value_error("a param group without a 'params' list");
      for (Py_ssize_t j = 0; j < PyList_GET_SIZE(params); ++j) {
        params_.push_back(py::reinterpret_borrow<py::object>(PyList_GET_ITEM(params, j)));
      }
    }
    if (kernel_index_.size() != params_.size()) {
      throw py::value_error("kernel_index needs one entry per param");
    }
    for (py::handle t : watched) {
      watched_.push_back(py::reinterpret_borrow<py::object>(t));
      impls_.push_back(checked_impl(t.ptr(), "watched tensor"));
      Meta m;
      if (!read_meta(impls_.back(), m)) throw py::value_error("unreadable watched tensor");
      watched_meta_.push_back(std::move(m));
    }
    int64_t n = 0;
    for (int64_t k : kernel_index_) n = k + 1 > n ? k + 1 : n;
    grads_.resize(size_t(n));
    std::vector<bool> seen(size_t(n), false);
    for (size_t i = 0; i < params_.size(); ++i) {
      int64_t k = kernel_index_[i];
      if (k < 0) continue;
      if (seen[size_t(k)]) throw py::value_error("kernel_index repeats a position");
      seen[size_t(k)] = true;
      PyObject* g = local_grad(params_[i].ptr());
      void* impl = g == nullptr ? nullptr : impl_of(g);
      Py_XDECREF(g);
      if (impl == nullptr || !read_meta(impl, grads_[size_t(k)])) {
        throw py::value_error("a planned grad is missing or unreadable");
      }
    }
    for (bool s : seen) {
      if (!s) throw py::value_error("kernel_index leaves a kernel grad position empty");
    }
  }

  // 2: params or their state changed (validate everything again); 1: grads changed beyond
  // their addresses (appeared, vanished, other dtype, shape, strides, device or type: validate
  // the grads); else (kernel grads in kernel order, whether an address moved).
  py::object check(py::list groups) {
    size_t k = 0;
    for (py::handle g : groups) {
      PyObject* params = group_params(g.ptr());
      if (params == nullptr) return py::int_(2);
      Py_ssize_t n = PyList_GET_SIZE(params);
      if (k + size_t(n) > params_.size()) return py::int_(2);
      for (Py_ssize_t j = 0; j < n; ++j) {
        if (PyList_GET_ITEM(params, j) != params_[k + size_t(j)].ptr()) return py::int_(2);
      }
      k += size_t(n);
    }
    if (k != params_.size()) return py::int_(2);
    uintptr_t ptr = 0;
    for (size_t i = 0; i < impls_.size(); ++i) {
      if (compare(impls_[i], watched_meta_[i], &ptr, true) != Diff::same) {
        return py::int_(2);
      }
    }
    py::list out(grads_.size());
    bool moved = false;
    for (size_t i = 0; i < params_.size(); ++i) {
      int64_t idx = kernel_index_[i];
      PyObject* g = local_grad(params_[i].ptr());
      if (g == nullptr) {  // no grad (or an attribute error: the Python path reports it)
        if (idx >= 0) return py::int_(1);
        continue;
      }
      if (idx < 0) {
        Py_DECREF(g);
        return py::int_(1);
      }
      Meta& want = grads_[size_t(idx)];
      void* impl = impl_of(g);
      Diff d = impl == nullptr ? Diff::other : compare(impl, want, &ptr, false);
      if (d == Diff::other) {
        Py_DECREF(g);
        return py::int_(1);
      }
      if (d == Diff::moved) {
        want.ptr = ptr;
        moved = true;
      }
      PyList_SET_ITEM(out.ptr(), Py_ssize_t(idx), g);  // steals the reference
    }
    return py::make_tuple(out, moved);
  }

  // The kernel grads' addresses as last checked, in kernel order.
  std::vector<uintptr_t> grad_ptrs() const {
    std::vector<uintptr_t> out;
    out.reserve(grads_.size());
    for (const Meta& m : grads_) out.push_back(m.ptr);
    return out;
  }

 private:
  // the "params" list of a param group dict (borrowed), or nullptr
  static PyObject* group_params(PyObject* group) {
    static PyObject* name = PyUnicode_InternFromString("params");
    if (!PyDict_Check(group)) return nullptr;
    PyObject* params = PyDict_GetItemWithError(group, name);
    if (params == nullptr || !PyList_Check(params)) {
      PyErr_Clear();
      return nullptr;
    }
    return params;
  }

  // p.grad (or its local shard), a new reference; nullptr for None or on any error
  PyObject* local_grad(PyObject* p) const {
    static PyObject* grad_name = PyUnicode_InternFromString("grad");
    static PyObject* local_name = PyUnicode_InternFromString("_local_tensor");
    PyObject* g = PyObject_GetAttr(p, grad_name);
    if (g == nullptr) {
      PyErr_Clear();
      return nullptr;
    }
    if (g == Py_None) {
      Py_DECREF(g);
      return nullptr;
    }
    if (!sharded_) return g;
    PyObject* lg = PyObject_GetAttr(g, local_name);
    Py_DECREF(g);
    if (lg == nullptr) PyErr_Clear();
    return lg;
  }

  std::vector<py::object> params_;   // held: identity compares cannot be fooled by reuse
  std::vector<py::object> watched_;  // held: their impls stay valid
  std::vector<void*> impls_;
  std::vector<Meta> watched_meta_;
  std::vector<int64_t> kernel_index_;
  std::vector<Meta> grads_;  // per kernel grad: what it must be; its address as last seen
  bool sharded_;
};

}  // namespace

void bind_step_signature(py::module_& m) {
  m.def("load_torch_shim", &load_torch_shim, py::arg("libtorch_path"), py::arg("tensor_type"),
        py::arg("probe"), py::arg("handle"), py::arg("dtypes"),
        "Resolve torch's C shim for StepSignature (Note [step signature]); raises ImportError "
        "when this torch lacks it or its tensor layout is not the expected one.");
  m.def("tensor_meta", &tensor_meta, py::arg("tensor"),
        "(data_ptr, dtype, device type, device index, layout, sizes, strides) read through "
        "torch's C shim (codes are torch's c10 enums).");
  m.def("signature", &signature, py::arg("tensors"),
        "(addresses, element counts, dtypes, strides) of a sequence of tensors, read through "
        "torch's C shim (fusedopt._native.signature).");
  py::class_<StepSignature>(m, "StepSignature",
                            "Note [step signature]: every tensor of a step, checked in one call.")
      .def(py::init<py::list, py::list, std::vector<int64_t>, bool>(), py::arg("groups"),
           py::arg("watched"), py::arg("kernel_index"), py::arg("sharded"))
      .def("check", &StepSignature::check, py::arg("groups"))
      .def("grad_ptrs", &StepSignature::grad_ptrs);
}

}  // namespace fusedopt::binding
