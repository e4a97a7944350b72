#!/usr/bin/env bash
# Miller & Hardt Table 1 on Wikitext-2 -- 4 rows x 3 seeds -- on one GPU.
#
#   SEQBENCH_GIT_SHA=$(git rev-parse HEAD) SEQBENCH_GIT_DIRTY=0 bash benchmarks/gpu_wikitext2.sh OUT_DIR
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
# The LSTM rows in one session, over two calls on the same warm machine
# (the work folder, .gpu_work/, stays there between calls; `timeout`'s SIGTERM
# makes the run checkpoint the step it is at):
#   PATTERN='mh-wikitext2-lstm-*' SEEDS=1 CAP_STEPS=0 FULL_SECONDS=490 bash benchmarks/gpu_wikitext2.sh $OUT
#   PATTERN='mh-wikitext2-lstm-*' SEEDS=1 CAP_STEPS=0 FULL_SECONDS=200 bash benchmarks/gpu_wikitext2.sh $OUT
# That glob is seed 0 of the unstable, the certified stable and the
# authors'-update stable LSTM (mh-wikitext2-lstm-stable-authors), one vmapped
# program. DONE_FROM=DIR first copies a committed results folder's rows into
# the work folder, so that the sweep skips the runs done there: with
# DONE_FROM=benchmarks/results/nvidia-h200/wikitext2_b9f166d (the certified
# stable LSTM, seed 0) the program holds the other two, the next run to make.
# On one H200 (b9f166d) a single LSTM took 525 s for 40 epochs (~3.3 ms a
# step) and the 6-model program stepped in ~5.9 ms, so 2-3 models should take
# ~8-10 min: more than one call's 600 s, so call 2's FULL_SECONDS should be the
# epochs call 1 left (its "SIGTERM in epoch N" line) times the epoch time its log
# shows, plus ~60 s for start-up and compiling. Call 2 must follow on the same
# warm machine (it stays ~30 s): RESUME_ONLY=1 makes a call that finds no
# checkpoint of call 1 skip training instead of starting the pair again from
# epoch 0 (a fresh machine has no .gpu_work/). The RNN group of 6 (~19 min) does not fit
# one session. SEEDS=2 later adds seed 1 (the sweep skips the runs it has rows
# for); rows of later sessions append to the same results, which the report merges.
set -uo pipefail
OUT=${1:?usage: gpu_wikitext2.sh OUT_DIR}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
# Everything is written to a work folder inside the (git-ignored) tree, so that
# a second call on the same machine resumes, and packed into one archive on
# exit (the device tool returns few files), also when a step times out.
WORK=${WORK:-$PWD/.gpu_work/wikitext2}
mkdir -p "$WORK"
pack() {
  tar czf "$OUT/wikitext2_results.tgz.tmp" --exclude=checkpoints -C "$WORK" . \
    && mv "$OUT/wikitext2_results.tgz.tmp" "$OUT/wikitext2_results.tgz"
  return 0
}
trap pack EXIT
trap 'exit 143' TERM INT
PY=${PYTHON:-python3}
if [ -n "${DONE_FROM:-}" ] && [ ! -e "$WORK/wikitext2/results.jsonl" ]; then
  mkdir -p "$WORK/wikitext2/curves"
  cp "$DONE_FROM/results.jsonl" "$WORK/wikitext2/" || exit 1
  cp "$DONE_FROM"/curves/*.json "$WORK/wikitext2/curves/" 2>/dev/null
fi
. benchmarks/carried_wheels.sh
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
CAP_STEPS=${CAP_STEPS:-200}
# Which rows: the four of Table 1 by default (the globs leave out the
# *-stable-authors variants); PATTERN holds one or more globs, split on spaces.
PATTERN=${PATTERN:-'mh-wikitext2-*-stable mh-wikitext2-*-unstable'}
read -ra PATTERNS <<< "$PATTERN"
log() { echo "== $(date +%T) $*"; }

# CAP_STEPS=0 skips the capped sweep (a second call that only resumes the full one).
if [ "$CAP_STEPS" != 0 ]; then
  log "capped sweep: 1 epoch x $CAP_STEPS steps per run, for the cost estimate"
  timeout "${CAP_TIMEOUT:-240}" $PY -m seqbench sweep "${PATTERNS[@]}" --seeds "${SEEDS:-3}" --vmap \
    --set train.epochs=1 --set train.max_steps_per_epoch="$CAP_STEPS" --set train.max_eval_batches=20 \
    --out "$WORK/wikitext2-capped" 2>&1 | tail -n 20
  $PY scripts/estimate_full_run.py "$WORK/wikitext2-capped"
fi

if [ "${FULL_SECONDS:-420}" = 0 ]; then log "FULL_SECONDS=0: no full sweep"; exit 0; fi
if [ "${RESUME_ONLY:-0}" = 1 ] && ! ls "$WORK"/wikitext2/checkpoints/*/state.msgpack >/dev/null 2>&1; then
  log "RESUME_ONLY=1 and no checkpoint in $WORK/wikitext2 (a fresh machine?): no full sweep"
  exit 0
fi
log "full sweep, at most ${FULL_SECONDS:-420} s (resumable: rerun to continue)"
# --foreground: SIGTERM goes to the sweep alone, which checkpoints; signalling
# its whole process group also killed a compiler JAX had started (`ptxas exited
# with non-zero error code 15`, benchmarks/results/nvidia-h100), so the run
# died with a traceback instead of checkpointing. -k: KILL if it is still
# there 60 s later.
timeout --foreground -k 60 "${FULL_SECONDS:-420}" $PY -m seqbench sweep "${PATTERNS[@]}" --seeds "${SEEDS:-3}" --vmap \
  --out "$WORK/wikitext2" 2>&1 | tail -n 30
pack  # before the report: rows and curves come back even if the tool's limit cuts it
$PY -m seqbench report "$WORK/wikitext2" --plots --out "$WORK/wikitext2/report" 2>&1 | tail -n 20
log "done"
