// Opens the namespace of the ISA this translation unit is compiled for
// (Note [one ISA per translation unit], csrc/cpu/isa.h). CMake passes -DFUSEDOPT_ISA=<isa>.
#pragma once

#ifndef FUSEDOPT_ISA
#error "compile csrc/cpu/kernels/*.cpp with -DFUSEDOPT_ISA=generic|avx2|avx512"
#endif
