#!/usr/bin/env bash
# One GPU session's worth of measurements, written to one folder.
#
#   SEQBENCH_GIT_SHA=$(git rev-parse HEAD) SEQBENCH_GIT_DIRTY=0 bash benchmarks/gpu.sh OUT_DIR
#   STEPS="svt wikitext2 bf16" DEADLINE_S=480 SEQBENCH_GIT_SHA=... bash benchmarks/gpu.sh OUT_DIR
#
# (the SHA, and 0/1 for uncommitted code, are passed in because the copy of the tree on a remote GPU machine
# has no .git; every row records it.)
#
# Installs nothing from outside: it needs jax (with the CUDA plugin), flax,
# optax, chex and torch already on the machine, and runs seqbench from the
# source tree. The data tasks (the accuracy rows of the f32/bf16 suites, the
# wikitext2 and vmap steps) also need `datasets`, which the GPU machine lacks:
# carry its wheels in .whl (see gpu_wikitext2.sh); they are installed into
# /tmp/site first. The executor equality checks always run first (a
# failed check stops the script); then the steps named in STEPS, in that
# order (default: f32 svt tcn bf16, ~8 minutes on one H100/H200):
#
#   f32        seqbench bench --suite full --dtype f32 (with the T-scaling sweep)
#   svt        scan vs truncated at T=1024 (B=32, H=512), f32 and bf16, with the
#              truncated model's two inner loops and its matmul floor
#   tcn        TCN conv forms vs the PyTorch TCN
#   bf16       seqbench bench --suite full --dtype bf16, no scaling sweep
#   bf16_lstm  the bf16 suite's LSTM rows only (seqbench, flax, torch cuDNN; ~1 min):
#              flax's row computes in bf16 since the carry fix (its older bf16 rows
#              ran the recurrent matmul in f32)
#   wikitext2  the capped Miller & Hardt Wikitext-2 sweep and its cost estimate
#   vmap       benchmarks/vmap_training.py (vmapped training speed-up, JSB)
#   music      capped Nottingham sweep (Miller & Hardt pairs and the TCN, 3 seeds
#              vmapped, 1 epoch x 100 steps) and its full-run estimate: whether a
#              whole group fits one session's device time
#   gpu_rows   capped sweep of every row the CPU cannot run (PTB char/word, (p)MNIST;
#              1 epoch x 30 steps each, one seed, stable/unstable pairs vmapped)
#              and its full-run estimate: the measured GPU cost the registry's
#              cost_gpu strings still guess (~3-5 min, mostly compiling). Its
#              data is not in the package: copy it next to the tree and carry it
#              with the wheels (run's carry [".whl", ".gpu_data"], 15 MB):
#                mkdir -p .gpu_data && cp -r ../shared/data/ptb ../shared/data/mnist .gpu_data/
#              and run with SEQBENCH_DATA=.gpu_data
#   lm         benchmarks/lm_step.py: the Wikitext-2 rows' vmapped train step,
#              its projection and the scan unroll
#   projection benchmarks/projection_forms.py: the stable RNN's singular-value
#              clip by eigh ("gram", the default), by QDWH polar decompositions
#              ("polar") and by SVD, on the group's 6 matrices of 200 (~1 min)
#   gradforms  benchmarks/scan_grad_forms.py: the LSTM scan's gradient by autodiff
#              vs with the recurrent weight's gradient as one GEMM, f32 and bf16
#   compile    the slowest-compiling suite steps (LRU parallel, WaveNet, TCN)
#              with the autotune cache cold, warm, with autotuning off, and at
#              autotune level 1
#   profile    benchmarks/profile_steps.py: device busy time vs wall time and the
#              top kernels of the steps that miss their targets (f32, then bf16
#              for the suite steps)
#
# Each step has its own time limit, and none runs past DEADLINE_S seconds from
# the start (default 540), so one slow step cannot eat the others and the
# results are packed before the device tool's own limit.
set -uo pipefail
OUT=${1:?usage: gpu.sh OUT_DIR}
START=$(date +%s)
DEADLINE_S=${DEADLINE_S:-540}
STEPS=${STEPS:-f32 svt tcn bf16}
# Results go to a work folder and are packed into one archive (the device tool
# returns at most 8 files) after every step and on exit: a SIGKILL from the
# tool's own limit runs no trap, and then the last step's pack is what returns.
WORK=$(mktemp -d)
mkdir -p "$OUT"
pack() {
  tar czf "$OUT/gpu_results.tgz.tmp" --exclude=checkpoints -C "$WORK" . \
    && mv "$OUT/gpu_results.tgz.tmp" "$OUT/gpu_results.tgz"
  cp "$WORK"/*.log "$OUT"/ 2>/dev/null
  return 0
}
trap pack EXIT
trap 'exit 143' TERM INT
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
. benchmarks/carried_wheels.sh
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
log() { echo "== $(date +%T) +$(( $(date +%s) - START ))s $*"; }
# limit CAP: the step's own cap, cut to what is left before the deadline.
# Steps run under `timeout --foreground -k 20`: SIGTERM reaches the Python
# process alone (a training run then checkpoints), not a compiler JAX started
# (signalling the group killed ptxas on an H100: "exited with non-zero error
# code 15"); KILL follows 20 s later if it is still running.
limit() {
  local left=$(( DEADLINE_S - ($(date +%s) - START) ))
  (( left < $1 )) && echo $(( left > 1 ? left : 1 )) || echo "$1"
}

log "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$WORK/nvidia-smi.csv"
$PY -c "import jax, flax, optax, torch; print(jax.__version__, jax.devices(), flax.__version__, optax.__version__, torch.__version__)"

log "equality checks on the device (executors and conv forms vs reference paths)"
timeout --foreground -k 20 "$(limit 90)" $PY benchmarks/gpu_checks.py 2>&1 | tee "$WORK/gpu_checks.log"
[ "${PIPESTATUS[0]}" = 0 ] || { echo "equality checks failed"; exit 1; }
pack

# The suites' caps: on an H200 (05d8e37) f32 was still in its T-scaling rows
# at 200 s and bf16 in its last throughput row at 100 s, so neither reached
# its accuracy rows or wrote REPORT.md.
step_f32() {
  # F32_SCALING=0 leaves out the T-scaling sweep (it took >100 s on an H200).
  local scaling=""; [ "${F32_SCALING:-1}" = 0 ] && scaling="--no-scaling"
  timeout --foreground -k 20 "$(limit 300)" $PY -m seqbench bench --suite full --dtype f32 $scaling --out "$WORK/full_f32" 2>&1 \
    | tee "$WORK/full_f32.log" | tail -n 70
}
step_svt() {
  local dt
  for dt in float32 bfloat16; do
    timeout --foreground -k 20 "$(limit 75)" $PY benchmarks/scan_vs_truncated.py --preset gpu --dtype $dt --cells lstm \
      --chunks auto --inners unrolled,scan --floor --out "$WORK/svt" 2>&1 | tail -n 14
  done
}
step_tcn() {
  # The lax_conv forms are left out: 0.5-0.7 s per call and up to 54 s compile on an H200.
  timeout --foreground -k 20 "$(limit 60)" $PY benchmarks/tcn_forms.py --size gpu --forms shifted_matmul im2col shifted_output \
    --out "$WORK/tcn" 2>&1 | tail -n 14
}
step_bf16() {
  timeout --foreground -k 20 "$(limit 160)" $PY -m seqbench bench --suite full --dtype bf16 --no-scaling --out "$WORK/full_bf16" 2>&1 \
    | tee "$WORK/full_bf16.log" | tail -n 45
}
step_bf16_lstm() {
  # (BF16_LSTM_SUITE=tiny: a quick check of the step on a CPU.)
  timeout --foreground -k 20 "$(limit 90)" $PY -m seqbench bench --suite ${BF16_LSTM_SUITE:-full} --dtype bf16 \
    --no-scaling --no-accuracy --devices off --only "LSTM" --out "$WORK/bf16_lstm" 2>&1 \
    | tee "$WORK/bf16_lstm.log" | tail -n 20
}
step_wikitext2() {
  # Capped only (FULL_SECONDS=0): the full sweep needs more than one session's device time.
  WORK="$WORK/wikitext2" FULL_SECONDS=0 CAP_TIMEOUT="$(limit 200)" \
    bash benchmarks/gpu_wikitext2.sh "$WORK/wikitext2_pack" 2>&1 | tee "$WORK/wikitext2.log" | tail -n 30
}
step_lm() {
  timeout --foreground -k 20 "$(limit 150)" $PY benchmarks/lm_step.py --backbones rnn,lstm --seeds 3 --unrolls 1,8 \
    --out "$WORK/lm_step" 2>&1 | tee "$WORK/lm_step.log" | tail -n 20
}
step_projection() {
  timeout --foreground -k 20 "$(limit 90)" $PY benchmarks/projection_forms.py --out "$WORK/projection" 2>&1 \
    | tee "$WORK/projection.log" | tail -n 6
}
step_profile() {
  timeout --foreground -k 20 "$(limit 150)" $PY benchmarks/profile_steps.py --out "$WORK/profile_f32" 2>&1 \
    | tee "$WORK/profile_f32.log" | tail -n 12
  timeout --foreground -k 20 "$(limit 60)" $PY benchmarks/profile_steps.py --dtype bfloat16 \
    --targets lstm-scan,tcn,lstm-scan-long,lstm-truncated-long --out "$WORK/profile_bf16" 2>&1 \
    | tee "$WORK/profile_bf16.log" | tail -n 8
}
step_music() {
  timeout --foreground -k 20 "$(limit 180)" $PY -m seqbench sweep 'mh-nottingham-*' tcn-nottingham-tcn --seeds 3 --vmap \
    --set train.epochs=1 --set train.max_steps_per_epoch=100 --set train.max_eval_batches=5 \
    --out "$WORK/nottingham-capped" 2>&1 | tee "$WORK/nottingham-capped.log" | tail -n 12
  $PY scripts/estimate_full_run.py "$WORK/nottingham-capped" | tail -n 8
}
step_gpu_rows() {
  # (GPU_ROWS="tcn-smnist-tcn" GPU_ROWS_STEPS=3: a quick check of the step on a CPU.)
  local d
  for d in ptb mnist; do
    [ -d "${SEQBENCH_DATA:-/nonexistent}/$d" ] || { echo "gpu_rows: no $d under SEQBENCH_DATA (${SEQBENCH_DATA:-unset}); see the header"; return 1; }
  done
  local -a rows=('mh-ptb-char-*' 'tcn-smnist-*' 'tcn-pmnist-*' 'tcn-ptb-word-*' 'tcn-ptb-char-*')
  [ -n "${GPU_ROWS:-}" ] && read -ra rows <<< "$GPU_ROWS"  # (read does not expand the globs)
  timeout --foreground -k 20 "$(limit 300)" $PY -m seqbench sweep "${rows[@]}" \
    --vmap --set train.epochs=1 --set train.max_steps_per_epoch=${GPU_ROWS_STEPS:-30} --set train.max_eval_batches=2 \
    --out "$WORK/gpu-rows-capped" 2>&1 | tee "$WORK/gpu-rows-capped.log" | tail -n 30
  $PY scripts/estimate_full_run.py "$WORK/gpu-rows-capped" | tail -n 30
}
step_gradforms() {
  local dt
  for dt in float32 bfloat16; do
    timeout --foreground -k 20 "$(limit 60)" $PY benchmarks/scan_grad_forms.py --size ${GRADFORMS_SIZE:-gpu} \
      --dtype $dt --out "$WORK/scan_grad_forms" 2>&1 | tail -n 7
  done
}
step_compile() {
  # GPU compile time is mostly XLA's autotuning of its GEMM fusions (XLA:CPU
  # compiles these steps in 1.3-2.7 s). On an H200 (b9f166d) autotuning off
  # cut the WaveNet train step's compile from 7.2 to 3.4 s but made it run 8.8x
  # slower; the per-fusion autotune cache that `seqbench` now keeps made a
  # second process compile it in 2.4 s at full speed. So: a cold cache, the
  # same cache warm, autotuning off without a cache, and autotuning at level 1
  # without a cache (XLA's default level 4 also initialises, re-initialises and
  # checks the candidates' output buffers; level 1 only times them: does that
  # keep the choice and cut the cold compile?).
  # (COMPILE_SUITE=tiny: a quick check of the step on a CPU.)
  local atc="$WORK/autotune_cache" run xf level
  local -a vars
  for run in cold warm off level1; do
    vars=(SEQBENCH_AUTOTUNE_CACHE="$atc")
    case $run in off) level=0 ;; level1) level=1 ;; *) level= ;; esac
    if [ -n "$level" ]; then
      # XLA reads a XLA_FLAGS that does not start with "--" as a file name.
      xf="${XLA_FLAGS:-} --xla_gpu_autotune_level=$level"; xf=${xf# }
      vars=(XLA_FLAGS="$xf" SEQBENCH_AUTOTUNE_CACHE=off)
    fi
    env "${vars[@]}" timeout --foreground -k 20 "$(limit 60)" $PY -m seqbench bench \
      --suite ${COMPILE_SUITE:-full} --dtype f32 --no-scaling --no-accuracy --devices off \
      --only "LRU,WaveNet,TCN" --out "$WORK/compile_$run" 2>&1 | grep -E "compile|^seqbench" | tail -n 12
    # How many fusions the cold run autotuned (one cache entry each): the
    # number the LRU/WaveNet matmul merges (57f5733) were meant to lower.
    [ "$run" = cold ] && echo "autotune cache entries after the cold run: $(find "$atc" -type f | wc -l)" \
      | tee "$WORK/compile_cold/autotune_cache_entries.txt"
  done
}
step_vmap() {
  timeout --foreground -k 20 "$(limit 120)" $PY benchmarks/vmap_training.py --groups 1,2,6 --out "$WORK/vmap" 2>&1 \
    | tee "$WORK/vmap.log" | tail -n 20
}

for s in $STEPS; do
  if ! declare -F "step_$s" >/dev/null; then echo "unknown step $s"; continue; fi
  if (( $(date +%s) - START >= DEADLINE_S - 5 )); then log "deadline reached, skipping $s"; continue; fi
  log "step $s"
  "step_$s"
  pack
done
log "done"
