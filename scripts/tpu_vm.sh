#!/usr/bin/env bash
# Run one `seqbench sweep` shard on every worker of a Cloud TPU VM.
#
# UNTESTED: written without access to a TPU VM or gcloud (checked with
# `bash -n` and shellcheck only). Read it before you rely on it.
#
# usage: scripts/tpu_vm.sh TPU_NAME ZONE EXPERIMENT OUT [SWEEP_ARGS...]
#   e.g. scripts/tpu_vm.sh my-v4-32 us-central2-b 'tcn-*' gs://my-bucket/sweeps/tcn --seeds 3
#
# What it does:
#   1. packs the committed tree (`git archive HEAD`: uncommitted changes are
#      NOT shipped) and copies it to every worker (`tpu-vm scp --worker=all`);
#   2. on every worker (`tpu-vm ssh --worker=all`): makes a venv, installs
#      `jax[tpu]` and the repo, and runs
#        seqbench sweep EXPERIMENT --shard WORKER/N --out DIR SWEEP_ARGS...
#      With OUT = gs://..., DIR is a local folder on the worker, copied to
#      OUT/worker-WORKER afterwards (`gcloud storage rsync`); otherwise DIR = OUT
#      (shared storage mounted on every worker, or each worker's own disk).
#      `seqbench report` merges the folders.
#
# Assumptions:
#   - N = number of workers = entries of `networkEndpoints` in
#     `gcloud compute tpus tpu-vm describe` (override: NUM_WORKERS=N);
#   - WORKER, the 0-based worker index, is $TPU_WORKER_ID if set, else the
#     metadata attribute `agent-worker-number`, else the `-w-<i>` suffix of
#     the hostname (TPU VM hostnames end that way);
#   - `--shard i/n` of `seqbench sweep` takes a 0-based i < n;
#   - every worker runs its own single-host JAX program (no
#     jax.distributed); on multi-host slices all workers start together, so
#     a TPU runtime that waits for every host at start-up still starts;
#   - JAX_SPEC (default `jax[tpu]`) is what pip installs for JAX.
set -euo pipefail

if [[ $# -lt 4 ]]; then
  sed -n '2,9p' "$0" >&2
  exit 2
fi
name=$1 zone=$2 experiment=$3 out=$4
shift 4

repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
tarball=$(mktemp -t seqbench-src.XXXXXX.tar.gz)
trap 'rm -f "$tarball"' EXIT
git -C "$repo" archive --format=tar.gz -o "$tarball" HEAD

workers=${NUM_WORKERS:-$(gcloud compute tpus tpu-vm describe "$name" --zone "$zone" \
  --format=json | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["networkEndpoints"]))')}
echo "tpu_vm.sh: $name ($zone): $workers worker(s), experiment $experiment -> $out" >&2

gcloud compute tpus tpu-vm scp "$tarball" "$name:seqbench-src.tar.gz" --zone "$zone" --worker=all

# Runs on each worker; EXPERIMENT, OUT, NUM_WORKERS, JAX_SPEC come from `env` below.
remote=$(cat <<'EOF'
set -euo pipefail
md=http://metadata.google.internal/computeMetadata/v1/instance/attributes
worker=${TPU_WORKER_ID:-$(curl -sf -H 'Metadata-Flavor: Google' "$md/agent-worker-number" ||
  hostname | sed -n 's/.*-w-\([0-9][0-9]*\)$/\1/p')}
if [[ -z "$worker" ]]; then echo "cannot tell this worker's index" >&2; exit 1; fi
rm -rf ~/seqbench && mkdir -p ~/seqbench && tar -xzf ~/seqbench-src.tar.gz -C ~/seqbench
if [[ ! -x ~/seqbench-venv/bin/python ]]; then
  python3 -m venv ~/seqbench-venv || {
    sudo apt-get update -qq && sudo apt-get install -y -qq python3-venv &&
      python3 -m venv ~/seqbench-venv; }
fi
~/seqbench-venv/bin/pip install -q -U pip
~/seqbench-venv/bin/pip install -q "$JAX_SPEC" -e ~/seqbench
dir=$OUT
if [[ $OUT == gs://* ]]; then dir=~/seqbench-out; fi
echo "worker $worker/$NUM_WORKERS: seqbench sweep $EXPERIMENT --shard $worker/$NUM_WORKERS" >&2
~/seqbench-venv/bin/seqbench sweep "$EXPERIMENT" --shard "$worker/$NUM_WORKERS" --out "$dir" "$@"
if [[ $OUT == gs://* ]]; then gcloud storage rsync -r "$dir" "$OUT/worker-$worker"; fi
EOF
)

# Every word is %q-quoted, so the remote shell (bash on TPU VM images) sees the
# arguments exactly as given here.
command=$(printf '%q ' env EXPERIMENT="$experiment" OUT="$out" NUM_WORKERS="$workers" \
  JAX_SPEC="${JAX_SPEC:-jax[tpu]}" bash -c "$remote" seqbench-shard "$@")
gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command "$command"
