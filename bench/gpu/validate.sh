#!/usr/bin/env bash
# bench/gpu/validate.sh: issue 21's GPU proof in one call on a lent H100/H200 (docs/gpu-validation.md).
#
#   bash bench/gpu/validate.sh                 # on the GPU machine, from the repository root
#   bash bench/gpu/validate.sh --steps 3,5     # rerun some steps (a warm machine keeps the build)
#   bash bench/gpu/validate.sh --dry-run       # CPU rehearsal (CI: tests/test_gpu_validate_script.py)
#
# Everything is tee'd into $OUT (a temp dir when unset): validate.log, build.log, junit-gpu.xml,
# sanitizer.log, bench_gpu.json, bench_gpu.md, summary.txt -- 7 files, inside the device tool's
# limit of 8 files back. Exit status 0 when no step failed or ran out of time.
#
# Time boxes, seconds (a step is sent SIGINT at its box, so pytest and Python still write what
# they have, and SIGKILL 10 s later). Sum: 540 s = 9 minutes on an H100, leaving room in a
# 15-minute lease for the machine's start and one rerun of a failing step.
#   BOX_ENV=15          1  nvidia-smi, python/torch/triton/nvcc/cmake/ninja versions, build deps
#   BOX_ENV_AFTER=20    1  python3 -m fusedopt.env, after the build
#   BOX_BUILD=190       2  pip install --no-build-isolation --no-deps --no-index -v -e .
#                          (FUSEDOPT_CUDA=on, FUSEDOPT_CUDA_ARCHS=90, all cores)
#   BOX_TESTS=140       3  pytest -m gpu over every test file with a gpu marker, junit XML
#   BOX_WARM=20         4  the sanitizer driver on triton without a sanitizer: fills Triton's
#                          kernel and autotuning caches (TRITON_CACHE_AUTOTUNING=1), so the
#                          sanitized runs time no configs
#   BOX_MEMCHECK=30     4  compute-sanitizer --tool memcheck, once per backend (cuda, triton)
#   BOX_RACECHECK=20    4  compute-sanitizer --tool racecheck, once per backend
#                          (step 4's box is the sum of its five runs: 120)
#   BOX_BENCH=50        5  bench/gpu/bench_gpu.py (its cases stop starting 8 s before the box)
#   BOX_SUMMARY=5       6  bench/gpu/summarize.py -> summary.txt
# total = 15 + 20 + 190 + 140 + 20 + 2*30 + 2*20 + 50 + 5 = 540
# (--dry-run multiplies the boxes by 4: a shared CPU doing the CPU stand-ins is not the lease.)
set -uo pipefail

BOX_ENV=15
BOX_ENV_AFTER=20
BOX_BUILD=190
BOX_TESTS=140
BOX_WARM=20
BOX_MEMCHECK=30
BOX_RACECHECK=20
BOX_BENCH=50
BOX_SUMMARY=5

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
ROOT="$(cd "$(dirname "$SELF")/../.." && pwd)"
GPU_DIR="$ROOT/bench/gpu"
export PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# ------------------------------------------------------------------------------ the steps
cores() {  # usable CPUs (GNU nproc honours OMP_NUM_THREADS, which is not what is meant here)
  env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc
}

# Each runs in its own process (this script with --run-step NAME) under `timeout`.

step_env() {
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,temperature.gpu \
      --format=csv
  else
    echo "SKIP nvidia-smi: no CUDA device (nvidia-smi not found)"
  fi
  echo "--- versions"
  "$PY" --version
  # Versions from the package metadata (no torch import keeps the dry run quick; torch's
  # version string carries its CUDA build, +cu130); the GPU's name from nvidia-smi.
  "$PY" - <<'EOF' | tee -a "$STATE/facts"
import importlib.metadata as md
def v(d):
    try:
        return md.version(d)
    except md.PackageNotFoundError:
        return "MISSING"
for d in ("torch", "triton", "setuptools", "wheel", "pybind11", "cmake", "ninja", "pytest",
          "pytest-xdist", "pytest-timeout", "numpy"):
    print(f"{d}={v(d)}")
EOF
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>&1 | head -1)" | tee -a "$STATE/facts"
  else
    echo "gpu=none" | tee -a "$STATE/facts"
  fi
  for tool in nvcc cmake ninja compute-sanitizer; do
    if command -v "$tool" >/dev/null 2>&1; then
      echo "$tool=$("$tool" --version 2>&1 | grep -iE 'release|version|^[0-9]' | head -1)"
    else
      echo "$tool=not found"
    fi
  done | tee -a "$STATE/facts"
  echo "cores=$(cores)" | tee -a "$STATE/facts"
  # Which sources ran: the device tool sends the working tree (uncommitted edits included) and
  # maybe no .git, so a digest of the sources ties the logs to a tree state.
  echo "--- sources"
  git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo "no git metadata in this copy"
  git -C "$ROOT" status --short -- python csrc triton_kernels tests setup.py CMakeLists.txt 2>/dev/null | head -20
  echo "sources_sha256=$(cd "$ROOT" && find python csrc triton_kernels tests setup.py CMakeLists.txt \
    -type f \( -name '*.py' -o -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' \
    -o -name '*.txt' -o -name '*.cmake' \) 2>/dev/null | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-16)" \
    | tee -a "$STATE/facts"
  free -g 2>/dev/null | head -2
  df -h "$ROOT" 2>/dev/null | tail -1
}

step_env_after() {
  "$PY" -m fusedopt.env
}

step_build() {
  if [ "$DRY" = 1 ]; then
    echo "SKIP build (dry run): using the installed fusedopt at $("$PY" -c \
      'import importlib.util as u; print(u.find_spec("fusedopt").origin)')"
    return 0
  fi
  # No network on the GPU machine: every build dependency must already be installed.
  local missing=0
  for mod in setuptools wheel pybind11; do
    if ! "$PY" -c "import $mod" 2>/dev/null; then
      echo "MISSING build dependency: python package '$mod' (no network here: carry its wheel, docs/gpu-validation.md)"
      missing=1
    fi
  done
  for tool in cmake ninja nvcc; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      echo "MISSING build tool: $tool"
      missing=1
    fi
  done
  [ "$missing" = 0 ] || return 1
  export FUSEDOPT_CUDA=on FUSEDOPT_CUDA_ARCHS=90 CMAKE_BUILD_PARALLEL_LEVEL="$(cores)"
  echo "pip install --no-build-isolation --no-deps --no-index -v -e . (FUSEDOPT_CUDA_ARCHS=90, $(cores) jobs; log: build.log)"
  local t0=$SECONDS rc
  (cd "$ROOT" && "$PY" -m pip install --no-build-isolation --no-deps --no-index -v -e .) \
    >"$OUT/build.log" 2>&1
  rc=$?
  local dt=$((SECONDS - t0))
  echo "build_seconds=$dt" >>"$STATE/facts"
  if [ "$rc" != 0 ]; then
    echo "build FAILED (pip exit $rc) after $dt s; the end of build.log:"
    tail -40 "$OUT/build.log"
    return "$rc"
  fi
  grep -E "fusedopt CUDA:|CMAKE_CUDA_ARCHITECTURES|Successfully installed" "$OUT/build.log" | tail -3
  "$PY" -c "import fusedopt._C, fusedopt._native_cuda as c; print('fusedopt._C and fusedopt.' + c.native().__name__.split('.')[-1] + ' import')" || return 1
  echo "build: ok in $dt s"
}

gpu_test_files() {  # every test file with a gpu marker; the two backend suites first, so that
  # a run cut by its time box has done those (pytest-xdist hands out tests in collection order)
  (cd "$ROOT" && for f in tests/test_cuda_backend.py tests/test_triton_backend.py \
     $(grep -lE 'pytest\.mark\.gpu' tests/test_*.py); do echo "$f"; done | awk '!seen[$0]++')
}

step_tests() {
  local files
  files=$(gpu_test_files | tr '\n' ' ')
  echo "GPU test files: $files"
  if [ "$HAS_GPU" != 1 ]; then
    echo "SKIP tests: no CUDA device (collecting the GPU selection only)"
    (cd "$ROOT" && env -u FUSEDOPT_SLOW "$PY" -m pytest $files -m gpu --collect-only -q \
      -p no:cacheprovider) | tail -3
    return "${PIPESTATUS[0]}"
  fi
  # ~1,400 tests (1,000-step ones stay skipped: FUSEDOPT_SLOW unset), mostly host-bound small
  # steps: spread over pytest-xdist workers (one CUDA context each) when it is installed.
  local extra=()
  if "$PY" -c "import xdist" 2>/dev/null; then
    extra+=(-n "${FUSEDOPT_GPU_TEST_WORKERS:-$(( $(cores) / 2 > 8 ? 8 : $(cores) / 2 ))}")
  fi
  if "$PY" -c "import pytest_timeout" 2>/dev/null; then
    extra+=(--timeout 90)
  fi
  # No -x: every failure is reported. FUSEDOPT_GPU_PYTEST_ARGS adds arguments for a rerun
  # (e.g. "--lf": the last run's failures, from .pytest_cache on a machine still warm).
  # shellcheck disable=SC2086
  (cd "$ROOT" && env -u FUSEDOPT_SLOW "$PY" -m pytest $files -m gpu -q -rfE \
    --junitxml="$OUT/junit-gpu.xml" "${extra[@]}" ${FUSEDOPT_GPU_PYTEST_ARGS:-})
}

sanitize_one() {  # tool backend box
  local tool=$1 backend=$2 box=$3 rc
  echo "### compute-sanitizer --tool $tool, backend $backend (box ${box} s)" | tee -a "$OUT/sanitizer.log"
  # Its own process group (timeout's default), so SIGINT and SIGKILL reach the Python process
  # under the sanitizer too; box - 5 plus the 5 s kill margin keeps each run inside its box.
  (cd "$ROOT" && PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout -s INT -k 5 $((box - 5)) \
    compute-sanitizer --tool "$tool" --error-exitcode 3 --print-limit 20 \
    "$PY" "$GPU_DIR/sanitize_run.py" --backend "$backend") 2>&1 | tee -a "$OUT/sanitizer.log"
  rc=${PIPESTATUS[0]}
  echo "### end $tool $backend: exit $rc" | tee -a "$OUT/sanitizer.log"
  echo "sanitizer.$tool.$backend=$rc" >>"$STATE/facts"
  return "$rc"
}

step_sanitizer() {
  : >"$OUT/sanitizer.log"
  if [ "$HAS_GPU" != 1 ]; then
    echo "SKIP sanitizer: no CUDA device (running the driver on the CPU backend instead)"
    (cd "$ROOT" && "$PY" "$GPU_DIR/sanitize_run.py" --device cpu --backend cpu --tiny) 2>&1 \
      | tee -a "$OUT/sanitizer.log"
    return "${PIPESTATUS[0]}"
  fi
  if ! command -v compute-sanitizer >/dev/null 2>&1; then
    echo "SKIP sanitizer: compute-sanitizer not found"
    return 0
  fi
  local rc=0
  # Triton's autotuner times every config on first use; under a sanitizer that is minutes. A run
  # without one first fills the on-disk autotuning cache, which the sanitized runs then read.
  export TRITON_CACHE_AUTOTUNING=1
  echo "### warm-up without a sanitizer, backend triton (box ${BOX_WARM} s)" | tee -a "$OUT/sanitizer.log"
  (cd "$ROOT" && timeout -s INT -k 5 $((BOX_WARM - 5)) "$PY" "$GPU_DIR/sanitize_run.py" \
    --backend triton) 2>&1 | tee -a "$OUT/sanitizer.log"
  [ "${PIPESTATUS[0]}" = 0 ] || rc=1
  sanitize_one memcheck cuda "$BOX_MEMCHECK" || rc=1
  sanitize_one memcheck triton "$BOX_MEMCHECK" || rc=1
  sanitize_one racecheck cuda "$BOX_RACECHECK" || rc=1
  sanitize_one racecheck triton "$BOX_RACECHECK" || rc=1
  return "$rc"
}

step_bench() {
  if [ "$HAS_GPU" != 1 ]; then
    echo "SKIP bench: no CUDA device (running bench_gpu.py --dry-run: the cpu backend, tiny sizes)"
    (cd "$ROOT" && "$PY" "$GPU_DIR/bench_gpu.py" --dry-run --repeats 20 --warmup 2 \
      --profile-steps 2 --out "$OUT")
    return $?
  fi
  (cd "$ROOT" && "$PY" "$GPU_DIR/bench_gpu.py" --out "$OUT" --time-budget $((BOX_BENCH - 8)))
}

step_summary() {
  "$PY" "$GPU_DIR/summarize.py" --out "$OUT" --state "$STATE" $([ "$DRY" = 1 ] && echo --dry-run)
}

# ------------------------------------------------------------------------------ driver
if [ "${1:-}" = "--run-step" ]; then
  "step_$2"
  exit $?
fi

DRY="${FUSEDOPT_VALIDATE_DRY_RUN:-0}"
STEPS="1,2,3,4,5,6"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --steps) STEPS="$2"; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$SELF"; exit 0 ;;
    *) echo "validate.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
export DRY
export OUT="${OUT:-$(mktemp -d /tmp/fusedopt-validate.XXXXXX)}"
mkdir -p "$OUT"
STATE="$(mktemp -d /tmp/fusedopt-validate-state.XXXXXX)"
export STATE
: >"$STATE/steps"
: >"$STATE/facts"

run_step() {  # number name box
  local num=$1 name=$2 box=$(($3 * BOX_SCALE)) t0 rc status dt
  case ",$STEPS," in *",$num,"*) ;; *) echo "=== STEP $num $name: not selected (--steps $STEPS)"; return 0 ;; esac
  echo
  echo "=== STEP $num $name (time box ${box} s) $(date -u +%H:%M:%S)"
  t0=$SECONDS
  timeout -s INT -k 10 "$box" bash "$SELF" --run-step "$name"
  rc=$?
  dt=$((SECONDS - t0))
  case $rc in
    0) status=ok ;;
    124|137) status=TIMEOUT ;;
    *) status=FAILED ;;
  esac
  echo "=== END STEP $num $name: $status (exit $rc) in ${dt} s"
  echo "$num|$name|$status|$rc|$dt|$box" >>"$STATE/steps"
}

main() {
  # The boxes budget the lease. A dry run shares a CPU with other work and does other (CPU)
  # work in the GPU steps' place, so it gets 4x the boxes: a time box is not its test.
  BOX_SCALE=1
  [ "$DRY" = 1 ] && BOX_SCALE=4
  echo "fusedopt GPU validation: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n), OUT=$OUT, dry run: $DRY"
  HAS_GPU=0
  if [ "$DRY" != 1 ] && "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    HAS_GPU=1
  fi
  export HAS_GPU
  echo "CUDA device visible to torch: $HAS_GPU"
  run_step 1 env "$BOX_ENV"
  run_step 2 build "$BOX_BUILD"
  run_step 1 env_after "$BOX_ENV_AFTER"
  run_step 3 tests "$BOX_TESTS"
  run_step 4 sanitizer $((BOX_WARM + 2 * BOX_MEMCHECK + 2 * BOX_RACECHECK))
  run_step 5 bench "$BOX_BENCH"
  run_step 6 summary "$BOX_SUMMARY"
  echo "files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
  local n
  n=$(find "$OUT" -type f | wc -l)
  if [ "$n" -gt 8 ]; then
    echo "WARNING: $n files under \$OUT; the device tool brings back at most 8"
  fi
  if grep -qE '\|(FAILED|TIMEOUT)\|' "$STATE/steps"; then
    return 1
  fi
  return 0
}

main 2>&1 | tee -a "$OUT/validate.log"
rc=${PIPESTATUS[0]}
rm -rf "$STATE"
exit "$rc"
