#include "cpu/isa.h"

#include <cstdlib>
#include <stdexcept>

namespace fusedopt::cpu {
namespace {

#define FUSEDOPT_KERNEL_TABLE(ISA) \
  KernelTable {                                                                          \
    #ISA, ISA::adam_loop, ISA::elementwise_loop, ISA::sgd_loop,       \
        ISA::momentum_loop, ISA::prologue_loop                                           \
  }

// CMake's FUSEDOPT_CPU_ISAS decides which ISAs were compiled (all three in a release build;
// generic only for a quick instrumented build): an ISA not built counts as unsupported.
const KernelTable kGeneric = FUSEDOPT_KERNEL_TABLE(generic);
#ifdef FUSEDOPT_WITH_ISA_avx2
const KernelTable kAvx2 = FUSEDOPT_KERNEL_TABLE(avx2);
#endif
#ifdef FUSEDOPT_WITH_ISA_avx512
const KernelTable kAvx512 = FUSEDOPT_KERNEL_TABLE(avx512);
#endif

bool cpu_has_avx512() {
#ifdef FUSEDOPT_WITH_ISA_avx512
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

bool cpu_has_avx2() {
#ifdef FUSEDOPT_WITH_ISA_avx2
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

const KernelTable* table_for(const std::string& isa) {
#ifdef FUSEDOPT_WITH_ISA_avx512
  if (isa == "avx512" && cpu_has_avx512()) return &kAvx512;
#endif
#ifdef FUSEDOPT_WITH_ISA_avx2
  if (isa == "avx2" && cpu_has_avx2()) return &kAvx2;
#endif
  if (isa == "generic") return &kGeneric;
  return nullptr;
}

const KernelTable* initial_table() {
  if (const char* forced = std::getenv("FUSEDOPT_CPU_ISA")) {
    if (const KernelTable* t = table_for(forced)) return t;
    throw std::invalid_argument(std::string("fusedopt: FUSEDOPT_CPU_ISA=") + forced +
                                " is not one of this CPU's ISAs (avx512, avx2, generic)");
  }
  return table_for(supported_isas().front());
}

const KernelTable*& current() {
  static const KernelTable* table = initial_table();
  return table;
}

}  // namespace

const KernelTable& kernels() { return *current(); }

std::vector<std::string> supported_isas() {
  std::vector<std::string> out;
  if (cpu_has_avx512()) out.push_back("avx512");
  if (cpu_has_avx2()) out.push_back("avx2");
  out.push_back("generic");
  return out;
}

void set_isa(const std::string& isa) {
  const KernelTable* t = table_for(isa);
  if (t == nullptr) {
    throw std::invalid_argument("fusedopt: this CPU cannot run the '" + isa + "' kernels");
  }
  current() = t;
}

}  // namespace fusedopt::cpu
