#!/usr/bin/env bash
# Issue 6's GPU checks in one device call (see ../.library/device/README.md from the repo root).
#
# The device machines have torch, triton, pytest and matplotlib but no network and no sglang,
# so nothing is installed: a shim directory lays the repository out as the installed package
# (sglang_pr/ plus kernels/ and frontends/ as sglang_pr.kernels / sglang_pr.frontends) and goes
# first on PYTHONPATH. Only the kernels run there (the server-side GPU tests need sglang).
#
#   bash benchmarks/cascade/gpu_check.sh              # on the device machine; writes to $OUT
#   python benchmarks/cascade/bench_cascade.py --merge <files_at>/cascade_cuda.json   # back here
#
# GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1 runs the same steps on a CPU (a dry run of the setup).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$(mktemp -d)}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
SHIM=$(mktemp -d)
mkdir "$SHIM/sglang_pr"
for f in "$ROOT"/sglang_pr/*; do ln -s "$f" "$SHIM/sglang_pr/"; done
ln -s "$ROOT/kernels" "$SHIM/sglang_pr/kernels"
ln -s "$ROOT/frontends" "$SHIM/sglang_pr/frontends"
export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
cd "$ROOT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__,
                                    "cuda", torch.cuda.is_available())'
# The GPU tests of the kernels (Triton compiled, float32 and bfloat16) and their CPU twins. A
# failing test must not cost the benchmark its turn on the scarce device: note it, go on.
rc=0
python3 -m pytest -q -p no:cacheprovider tests/kernels 2>&1 | tee "$OUT/gpu_tests.log" || rc=$?
python3 benchmarks/cascade/bench_cascade.py --device "$DEVICE" --part kernel \
    ${GPU_CHECK_QUICK:+--quick} --no-torch-native --out "$OUT/cascade_$DEVICE.json" 2>&1 \
    | tee "$OUT/gpu_bench.log" || rc=$?
echo "results in $OUT (exit $rc: non-zero if a test or the benchmark failed)"
exit $rc
