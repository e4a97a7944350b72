#!/usr/bin/env bash
# Miller & Hardt Table 1 on Wikitext-2 -- 4 rows x 3 seeds -- on one GPU.
#
#   SEQBENCH_GIT_SHA=$(git rev-parse HEAD) bash benchmarks/gpu_wikitext2.sh OUT_DIR
#
# `sweep --vmap` trains the 12 runs as two programs (RNN stable+unstable x 3
# seeds, LSTM likewise). Step 1 is a capped sweep (1 epoch x 200 steps) whose
# measured tokens/s gives the full runs' cost (scripts/estimate_full_run.py);
# step 2 runs the full sweep for at most FULL_SECONDS (default 420; 0 skips it) -- it is
# resumable, so the same command continues where a run was cut off, from its
# checkpoint. The issue's target: all 12 runs in under 15 minutes on one H100.
#
# The GPU machine lacks `datasets` (and its dill/multiprocess): carry them as
# wheels in .whl (Python 3.12), fetched here with
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl \
#     datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
# WikiText-2 itself ships inside the package (src/seqbench/data/).
# The capped step ran on an H200 (benchmarks/results/nvidia-h200/wikitext2-capped),
# and the full step for one run: PATTERN=mh-wikitext2-lstm-stable SEEDS=1 CAP_STEPS=0,
# 525 s for 40 epochs over two calls (nvidia-h200/wikitext2_b9f166d). On CPU,
# FULL_SECONDS=60 and a small cap go through both steps.
#
# The LSTM group alone in one session, over two calls on the same warm machine
# (the work folder, .gpu_work/, stays there between calls; `timeout`'s SIGTERM
# makes the run checkpoint the step it is at):
#   PATTERN='mh-wikitext2-lstm-*' CAP_STEPS=0 FULL_SECONDS=540 bash benchmarks/gpu_wikitext2.sh $OUT
#   PATTERN='mh-wikitext2-lstm-*' CAP_STEPS=0 FULL_SECONDS=300 bash benchmarks/gpu_wikitext2.sh $OUT
# On an H100 (benchmarks/results/nvidia-h100, profile) the 6-model steps took
# 7.7 ms (LSTM) and 10.6 ms (RNN) under the profiler: ~15 and ~21 min for 40
# epochs, more than one session's device time. One experiment's three seeds
# (PATTERN=mh-wikitext2-lstm-stable, say) train as a 3-model program; the
# rows of later sessions append to the same results and the report merges them.
# SEEDS=1 trains seed 0 alone; SEEDS=2 later adds seed 1 (the sweep skips the
# runs it has rows for).
set -uo pipefail
OUT=${1:?usage: gpu_wikitext2.sh OUT_DIR}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
# Everything is written to a work folder inside the (git-ignored) tree, so that
# a second call on the same machine resumes, and packed into one archive on
# exit (the device tool returns few files), also when a step times out.
WORK=${WORK:-$PWD/.gpu_work/wikitext2}
mkdir -p "$WORK"
trap 'tar czf "$OUT/wikitext2_results.tgz" --exclude=checkpoints -C "$WORK" .' EXIT
trap 'exit 143' TERM INT
PY=${PYTHON:-python3}
. benchmarks/carried_wheels.sh
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
CAP_STEPS=${CAP_STEPS:-200}
# Which rows: all four by default; PATTERN='mh-wikitext2-lstm-*' runs the LSTM
# group alone (~12 min of training on an H200, so it can finish within one
# session over two calls on the same warm machine; the RNN group, ~19 min, cannot).
PATTERN=${PATTERN:-'mh-wikitext2-*'}
log() { echo "== $(date +%T) $*"; }

# CAP_STEPS=0 skips the capped sweep (a second call that only resumes the full one).
if [ "$CAP_STEPS" != 0 ]; then
  log "capped sweep: 1 epoch x $CAP_STEPS steps per run, for the cost estimate"
  timeout "${CAP_TIMEOUT:-240}" $PY -m seqbench sweep "$PATTERN" --seeds "${SEEDS:-3}" --vmap \
    --set train.epochs=1 --set train.max_steps_per_epoch="$CAP_STEPS" --set train.max_eval_batches=20 \
    --out "$WORK/wikitext2-capped" 2>&1 | tail -n 20
  $PY scripts/estimate_full_run.py "$WORK/wikitext2-capped"
fi

if [ "${FULL_SECONDS:-420}" = 0 ]; then log "FULL_SECONDS=0: no full sweep"; exit 0; fi
log "full sweep, at most ${FULL_SECONDS:-420} s (resumable: rerun to continue)"
# --foreground: SIGTERM goes to the sweep alone, which checkpoints; signalling
# its whole process group also killed a compiler JAX had started (`ptxas exited
# with non-zero error code 15`, benchmarks/results/nvidia-h100), so the run
# died with a traceback instead of checkpointing. -k: KILL if it is still
# there 60 s later.
timeout --foreground -k 60 "${FULL_SECONDS:-420}" $PY -m seqbench sweep "$PATTERN" --seeds "${SEEDS:-3}" --vmap \
  --out "$WORK/wikitext2" 2>&1 | tail -n 30
$PY -m seqbench report "$WORK/wikitext2" --plots --out "$WORK/wikitext2/report" 2>&1 | tail -n 20
log "done"
