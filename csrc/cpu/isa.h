// Runtime choice of the instruction set the CPU kernels run with.
//
// Note [one ISA per translation unit]: csrc/cpu/kernels/*.cpp are compiled three times, with
// -DFUSEDOPT_ISA=generic (x86-64 baseline), avx2 (-mavx2 -mf16c) and avx512 (-mavx512f/bw/vl/dq),
// each into its own namespace fusedopt::cpu::<isa>; never with -march=native, so one wheel runs
// everywhere. At first use the best ISA the CPU supports is picked (__builtin_cpu_supports).
// For that to be safe, nothing a kernel TU compiles may be shared with another TU: header
// functions are FUSEDOPT_INLINE (forced inline, no out-of-line copy), kernels take plain structs
// (csrc/cpu/kernel_args.h) and use no std:: templates. tests/test_native_build.py disassembles
// the module and checks that only <isa>:: functions hold that ISA's registers.
#pragma once

#include <string>
#include <vector>

#include "cpu/kernel_args.h"

namespace fusedopt::cpu {

/// The chunk-loop entry points of one ISA.
struct KernelTable {
  const char* isa;
  void (*adam)(const AdamLoop&);
  void (*elementwise)(const ElementwiseLoop&);
  void (*sgd)(const SgdLoop&);
  void (*momentum)(const MomentumLoop&);
  void (*prologue)(const PrologueLoop&);
};

#define FUSEDOPT_DECLARE_KERNELS(ISA)             \
  namespace ISA {                                 \
  void adam_loop(const AdamLoop&);                \
  void elementwise_loop(const ElementwiseLoop&);  \
  void sgd_loop(const SgdLoop&);                  \
  void momentum_loop(const MomentumLoop&);        \
  void prologue_loop(const PrologueLoop&);        \
  }
FUSEDOPT_DECLARE_KERNELS(generic)
FUSEDOPT_DECLARE_KERNELS(avx2)
FUSEDOPT_DECLARE_KERNELS(avx512)
#undef FUSEDOPT_DECLARE_KERNELS

/// The kernels in use (the best supported ISA unless set_isa chose another).
const KernelTable& kernels();

/// ISAs this CPU can run, best first ("avx512", "avx2", "generic").
std::vector<std::string> supported_isas();

/// Use the kernels of `isa` (tests compare the ISAs; FUSEDOPT_CPU_ISA does the same at start).
/// Throws std::invalid_argument when the CPU cannot run it.
void set_isa(const std::string& isa);

}  // namespace fusedopt::cpu
