#!/usr/bin/env bash
# One GPU session's worth of measurements, written to one folder.
#
#   SEQBENCH_GIT_SHA=$(git rev-parse HEAD) bash benchmarks/gpu.sh OUT_DIR
#
# (the SHA is passed in because the copy of the tree on a remote GPU machine
# has no .git; every row records it.)
#
# Installs nothing: it needs jax (with the CUDA plugin), flax, optax, chex and
# torch already on the machine, and runs seqbench from the source tree. Runs
# the executor equality checks on the GPU first (a failed check stops the
# script), then the suites; each step has its own time limit so one slow step
# cannot eat the others. Expected cost: ~8 minutes on one H100/H200.
set -uo pipefail
OUT=${1:?usage: gpu.sh OUT_DIR}
# Results go to a work folder and are packed into one archive on exit (the
# device tool returns at most 8 files), also when a step times out.
WORK=$(mktemp -d)
trap 'tar czf "$OUT/gpu_results.tgz" -C "$WORK" . ; cp "$WORK"/*.log "$OUT"/ 2>/dev/null' EXIT
trap 'exit 143' TERM INT
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
log() { echo "== $(date +%T) $*"; }

log "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$WORK/nvidia-smi.csv"
$PY -c "import jax, flax, optax, torch; print(jax.__version__, jax.devices(), flax.__version__, optax.__version__, torch.__version__)"

log "equality checks on the device (executors and conv forms vs reference paths)"
timeout 90 $PY benchmarks/gpu_checks.py 2>&1 | tee "$WORK/gpu_checks.log"
[ "${PIPESTATUS[0]}" = 0 ] || { echo "equality checks failed"; exit 1; }

log "throughput suite, float32, with baselines and the T-scaling sweep"
timeout 200 $PY -m seqbench bench --suite full --dtype f32 --out "$WORK/full_f32" 2>&1 | tee "$WORK/full_f32.log" | tail -n 70

log "scan vs truncated at T=1024 (B=32, H=512), f32 and bf16"
for dt in float32 bfloat16; do
  timeout 60 $PY benchmarks/scan_vs_truncated.py --preset gpu --dtype $dt --cells lstm --out "$WORK/svt" 2>&1 | tail -n 9
done

log "TCN forms at the GPU size (the lax_conv forms left out: 0.5-0.7 s per call and up to 54 s compile on an H200)"
timeout 60 $PY benchmarks/tcn_forms.py --size gpu --forms shifted_matmul im2col shifted_output --out "$WORK/tcn" 2>&1 | tail -n 14

log "throughput suite, bfloat16, no scaling sweep"
timeout 100 $PY -m seqbench bench --suite full --dtype bf16 --no-scaling --out "$WORK/full_bf16" 2>&1 | tee "$WORK/full_bf16.log" | tail -n 45
log "done"
