#!/usr/bin/env bash
# Everything that needs a GPU, in stages that each fit one call of a borrowed GPU machine
# (PyTorch, Triton, timm and nvcc installed; no network; about 10 minutes per call):
#
#   bash benchmarks/gpu_session.sh build      # _C and _C_cuda for this GPU's architecture
#   bash benchmarks/gpu_session.sh test       # CUDA and Triton grids against the reference
#   bash benchmarks/gpu_session.sh sanitize   # compute-sanitizer memcheck / racecheck / initcheck
#   bash benchmarks/gpu_session.sh bench      # benchmarks/bench_gpu.py: PyTorch vs Triton vs CUDA
#   bash benchmarks/gpu_session.sh all        # the four in order (needs a longer limit)
#
# Logs and results go to $OUT (default build/gpu-session); the benchmark's tables also to
# benchmarks/results/, stamped with the GPU's name, versions and commit. A stage's exit status is
# its last failing step's, so a failed check is visible to whoever ran it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-build/gpu-session}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
# The package runs from this checkout (built in place), installed or not.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0

step() {  # step NAME COMMAND...: runs, logs to $OUT/NAME.log, prints the tail
  local name="$1"; shift
  echo "== $name: $*"
  local start=$SECONDS
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 15 "$OUT/$name.log"
  echo "== $name: exit $rc in $((SECONDS - start)) s"
  [[ $rc -ne 0 ]] && status=$rc
  return 0
}

cuda_root() {  # the toolkit the nvcc on PATH belongs to (it may be a wrapper script)
  if [[ -n "${CUDA_HOME:-}" && -x "${CUDA_HOME}/bin/nvcc" ]]; then echo "$CUDA_HOME"; return; fi
  local nvcc top
  nvcc="$(command -v nvcc || true)"
  if [[ -n "$nvcc" ]]; then
    top="$("$nvcc" --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n 1)"
    if [[ -n "$top" && -x "$top/bin/nvcc" ]]; then (cd "$top" && pwd -P); return; fi
    dirname "$(dirname "$(readlink -f "$nvcc")")"
    return
  fi
  echo /usr/local/cuda
}

environment() {
  nvidia-smi || true
  "$PY" - <<'EOF'
import platform, subprocess, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(),
      "capability", torch.cuda.get_device_capability())
try:
    import triton; print("triton", triton.__version__)
except ImportError:
    print("triton: not installed")
print("python", platform.python_version())
print("commit", subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip())
EOF
}

build() {
  local arch
  arch="$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')"
  export CUDA_HOME="$(cuda_root)" TORCH_CUDA_ARCH_LIST="$arch" DSCONV_EXT_FORCE_CUDA=1
  export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
  echo "CUDA_HOME=$CUDA_HOME TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS"
  "$PY" setup.py build_ext --inplace && "$PY" -c "import dsconv_ext; print(dsconv_ext.available_backends())"
}

stage_build() { step environment environment; step build build; }

stage_test() {
  step test-cuda "$PY" -m pytest -q -x tests/test_cuda_build.py tests/test_cuda_kernels.py
  step test-triton "$PY" -m pytest -q tests/test_triton_grid.py tests/test_triton_integration.py
  # The CPU suite with a GPU present: the auto rule and fallbacks see a CUDA device.
  step test-rest "$PY" -m pytest -q tests/test_backends.py tests/test_backends_grid.py tests/test_compile.py \
    tests/test_opcheck.py tests/test_deterministic.py tests/test_modules.py tests/test_errors.py
}

stage_sanitize() {
  local grid=(-m pytest -q -x tests/test_cuda_kernels.py)
  step memcheck compute-sanitizer --tool memcheck --error-exitcode 1 "$PY" "${grid[@]}" -k "not 64_bit and not compile"
  step racecheck compute-sanitizer --tool racecheck --racecheck-report analysis --error-exitcode 1 \
    "$PY" "${grid[@]}" -k "not 64_bit and not compile and (cross or large or fused)"
  step initcheck compute-sanitizer --tool initcheck --error-exitcode 1 "$PY" "${grid[@]}" -k "cross and fp32"
}

stage_bench() {
  step bench "$PY" benchmarks/bench_gpu.py
  cp benchmarks/results/bench-gpu-* benchmarks/results/auto-table-* "$OUT"/ 2>/dev/null || true
}

case "${1:-all}" in
  build) stage_build ;;
  test) stage_test ;;
  sanitize) stage_sanitize ;;
  bench) stage_bench ;;
  all) stage_build; stage_test; stage_sanitize; stage_bench ;;
  *) echo "usage: $0 build|test|sanitize|bench|all" >&2; exit 2 ;;
esac
exit $status
