r"""The single training / evaluation loop for every task and model.

``run_experiment(name_or_experiment, seed=0, out_dir=...)`` trains one model
and appends one row to ``OUT/results.jsonl``; ``run_experiments_vmapped`` trains
several variants that share shapes (seeds, stable/unstable, λ, lr) *together*
in one compiled program by ``vmap`` over a leading model axis, with results
equal to separate runs. ``seqbench train EXPERIMENT`` (:func:`train_main`, also
``python -m seqbench.train``) is the command line.

What one run does (:class:`TrainConfig` has the knobs):

1. build the task, the :class:`~seqbench.models.Model` and an optax optimiser
   (``sgd``/``adam``/``rmsprop``, optional momentum, global-norm clipping);
   the learning rate is an injected hyper-parameter, so the plateau rules
   change it without recompiling;
2. each step: forward/backward, update, and for stable variants the projection
   of *every* recurrent layer onto the stable set
   (:func:`seqbench.stability.project_tree`, i.e. projected gradient
   descent, after every update); language models carry the state across
   consecutive BPTT windows (reset each epoch, as pytorch/examples);
3. a non-finite loss or gradient marks the run diverged at that step; the
   update is not applied, the run stops at the end of the epoch and records
   it;
4. after each epoch: the valid metric, the learning-rate rule (``plateau``: ÷4
   without improvement; ``jsb``: the authors' rule), the best-valid params,
   a checkpoint (also every ``checkpoint_seconds`` within an epoch);
5. at the end: the best-valid params on test, the certified contraction bound
   (max over layers of :func:`seqbench.stability.lipschitz_bound`) and
   :func:`seqbench.stability.empirical_contraction` on test data, the
   truncation study (``eval_ks``), the row.

Resuming: checkpoints live in ``OUT/checkpoints/RUN_ID/``; re-running the same
command after a kill continues from the last one and gives the same result as
an uninterrupted run (data order and dropout keys are functions of the seed,
epoch and step only). SIGTERM (``timeout``, job schedulers) makes the run
checkpoint at its current step and exit 143 (:class:`TrainingInterrupted`), so
a time-capped job loses nothing; SIGKILL loses at most ``checkpoint_seconds``.
A run whose row is already in ``results.jsonl`` is not run again.

Outputs in ``OUT``:

* ``results.jsonl``: one JSON object per run with exactly :data:`RESULT_KEYS`,
  appended with a single ``os.write`` on an ``O_APPEND`` descriptor (a reader
  never sees half a row; :func:`read_results` skips a torn last line);
* ``curves/RUN_ID.json``: per-epoch history (train loss, valid metric, lr,
  certified bound, and every ``contraction_every`` epochs the measured
  contraction) and the truncation study (metric and ``||y - y^k||`` per k).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
from typing import Any, Iterable, Iterator, Mapping, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from seqbench import stability
from seqbench import tasks as tasks_lib
from seqbench.provenance import OutputDirError, git_state, make_output_dir, run_metadata, write_atomic
from seqbench.experiments import (ConfigError, Experiment, TrainConfig, apply_overrides,
                                  get_experiment, parse_set_args)
from seqbench.experiments import smoke as smoke_config
from seqbench.models import Model, ModelConfig

#: The keys of a result row, in order (other tools rely on exactly these):
#:
#: * ``model``: the backbone (``rnn``, ``lstm``, ``gru``, ``lru``, ``tcn``,
#:   ``wavenet``); ``executor``: ``scan``/``truncated``/``parallel``, ``conv``
#:   for conv nets; ``k``: the window when truncated, else null; ``lam``: null
#:   unless ``stable``.
#: * ``valid_metric``: the best valid metric (null for tasks without a valid
#:   split: adding, copy -- their test metric is that of the final params);
#:   ``test_metric``: the best-valid params on test (null when diverged).
#: * ``epochs``: epochs completed; ``steps``: updates applied; ``wall_s``: the
#:   whole run (across resumes; for a vmapped group, the group's);
#:   ``tokens_per_s``: scored input steps trained per second per model,
#:   excluding evaluation and every step that compiled (the first one, and the
#:   first of each new batch shape, e.g. music lengths).
#: * ``diverged_step``: the step whose loss or gradient was first non-finite.
#: * ``certified_bound``: max over layers of ``stability.lipschitz_bound``
#:   (inputs assumed in [-1, 1]); ``empirical_contraction``: max over layers of
#:   ``stability.empirical_contraction`` on test sequences; both null for conv
#:   nets, and the certified bound is null too where it is infinite (an LSTM
#:   whose forget gate can saturate at 1 in float32).
#: * ``sessions``: one entry per process that trained the run (the first, then
#:   every resume after a kill): ``epoch`` and ``step_in_epoch`` where it
#:   started, its ``git_sha``/``git_dirty`` and ``device_kind`` -- a run resumed
#:   under other code says so. (A checkpoint written before this field existed
#:   lists only the sessions since; the first then starts past epoch 0.)
#: * ``config``: the resolved experiment (task, task_options, model, train)
#:   plus ``smoke`` and ``vmap_group_size``; ``run_id``: hash of name +
#:   resolved config + seed (+ smoke), the same for a vmapped and a separate run.
RESULT_KEYS = ("experiment", "task", "model", "executor", "k", "stable", "lam", "seed",
               "metric_name", "valid_metric", "test_metric", "epochs", "steps", "wall_s",
               "tokens_per_s", "diverged", "diverged_step", "certified_bound",
               "empirical_contraction", "config", "git_sha", "git_dirty", "versions",
               "device_kind", "device_count", "dtype", "sessions", "run_id")

RESULTS_FILE = "results.jsonl"
_LOG_EVERY = 20  # steps between host syncs (progress bar, divergence check)


# ---------------------------------------------------------------------------
# Results.


def _json_safe(x, nonfinite_as_null: bool = True):
  """``x`` with numpy scalars as Python numbers; NaN/inf as null (strict JSON).

  ``nonfinite_as_null=False`` keeps them (Python's json writes and reads
  ``NaN``/``Infinity``): checkpoint metadata must come back as it was saved.
  """
  if isinstance(x, float) and not math.isfinite(x):
    return None if nonfinite_as_null else x
  if isinstance(x, dict):
    return {k: _json_safe(v, nonfinite_as_null) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_json_safe(v, nonfinite_as_null) for v in x]
  if isinstance(x, (np.floating,)):
    return _json_safe(float(x), nonfinite_as_null)
  if isinstance(x, (np.integer,)):
    return int(x)
  return x


def ensure_out_dir(out_dir: str) -> None:
  """Create ``out_dir`` if needed and check it is writable, before any work.

  Raises:
    ConfigError: it cannot be created or written to (one clear message
      instead of an OSError traceback after the run has started).
  """
  try:
    make_output_dir(out_dir)
  except OutputDirError as e:
    raise ConfigError(str(e)) from None


def check_seed(seed) -> int:
  """``seed`` as an int, or ConfigError: NumPy's and JAX's generators take [0, 2**32)."""
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
    raise ConfigError(f"seed must be an integer in [0, 2**32), got {seed!r}")
  return int(seed)


def append_result(out_dir: str, row: Mapping[str, Any]) -> None:
  """Append one row to ``out_dir/results.jsonl`` atomically (see :func:`append_results`)."""
  append_results(out_dir, [row])


def append_results(out_dir: str, rows: Sequence[Mapping[str, Any]]) -> None:
  """Append ``rows`` to ``out_dir/results.jsonl`` atomically, all or none.

  All lines go out in a single ``os.write`` on an ``O_APPEND`` descriptor and
  are fsynced, so concurrent writers on a local disk never interleave and a
  kill leaves either every row or none of them: a vmapped group's members
  never end half-recorded (the rest would form a new group, with a new
  checkpoint name, and retrain from epoch 0). A file whose last line is torn
  (a failed write) gets the newline it lacks first.
  """
  if not rows:
    return
  os.makedirs(out_dir, exist_ok=True)
  data = "".join(json.dumps(_json_safe(dict(row)), allow_nan=False) + "\n"
                 for row in rows).encode()
  path = os.path.join(out_dir, RESULTS_FILE)
  fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    # A torn last line (a short write, a full disk) would swallow this row:
    # end it first, so it reads back as one bad line that readers skip. The
    # lock keeps another writer's line from landing between the check and the write.
    fcntl.flock(fd, fcntl.LOCK_EX)
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
      data = b"\n" + data
    written = os.write(fd, data)
    if written != len(data):  # never seen for regular files; refuse to leave a torn row
      raise OSError(f"short write to {RESULTS_FILE}: {written} of {len(data)} bytes")
    os.fsync(fd)
  finally:
    os.close(fd)


def read_results(out_dir: str) -> list[dict]:
  """All complete rows of ``out_dir/results.jsonl`` (a torn last line is skipped)."""
  path = os.path.join(out_dir, RESULTS_FILE)
  if not os.path.exists(path):
    return []
  rows = []
  with open(path, "rb") as f:
    for line in f:
      if not line.endswith(b"\n"):
        continue
      try:
        rows.append(json.loads(line))
      except ValueError:
        continue
  return rows


#: Train settings that change only what is logged or how often it is saved,
#: never the trained model or its test metric: a run's identity ignores them,
#: so a finished run is recognised (and an interrupted one resumed) whatever
#: they are set to. ``eval_ks`` (the truncation study after training) and
#: ``checkpoint_seconds`` are hashed at their defaults, ``contraction_every``
#: not at all: all keep the ids runs had before they were bookkeeping.
#: Consequence: adding ``eval_ks`` to a finished run does not redo it -- run
#: the ``trunc-eval-*`` experiments, whose names differ.
BOOKKEEPING_FIELDS = ("eval_ks", "contraction_every", "test_every_epoch", "checkpoint_seconds")
_HASHED_AT_DEFAULT = {"eval_ks": (), "checkpoint_seconds": 300.0}

#: Train settings an unstable run never reads (no projection runs), hashed at
#: these values when ``stable`` is false: ``--set train.lam=0.9`` on a sweep of
#: stable and unstable rows must not retrain the finished unstable ones. Every
#: unstable run committed before this rule had exactly these values.
_UNUSED_WHEN_UNSTABLE = {"lam": 1.0, "projection": "certified"}

#: Settings (train and model) added after runs were committed, with their defaults: at
#: the default they are left out of a run's identity (so those runs keep their
#: ids), and rows written before they existed read as having the default
#: (``seqbench.report`` keeps an equal copy).
FIELDS_ADDED_LATER = {"train": {"projection": "certified", "lr_decay_window": 3,
                                 "zero_grad": True},
                      "model": {"init_scheme": "pytorch", "output_channels": 0}}


def run_id(exp: Experiment, seed: int, smoke: bool = False) -> str:
  """Stable hash of the experiment name, its resolved config and the seed.

  :data:`BOOKKEEPING_FIELDS` are left out of the hash, and so are
  :data:`FIELDS_ADDED_LATER` at their defaults; an unstable run's unused
  stability settings are hashed at fixed values (``_UNUSED_WHEN_UNSTABLE``).
  """
  config = exp.resolved_dict()
  config["train"] = {k: _HASHED_AT_DEFAULT.get(k, v) for k, v in config["train"].items()
                     if k not in BOOKKEEPING_FIELDS or k in _HASHED_AT_DEFAULT}
  if not config["train"]["stable"]:
    config["train"].update(_UNUSED_WHEN_UNSTABLE)
  for section, defaults in FIELDS_ADDED_LATER.items():
    config[section] = {k: v for k, v in config[section].items()
                       if not (k in defaults and v == defaults[k])}
  blob = json.dumps({"experiment": exp.name, "config": config, "seed": int(seed),
                     "smoke": bool(smoke)}, sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------
# Resolving an experiment against its task.


def resolve(experiment, overrides: Mapping[str, Any] = None, smoke: bool = False) -> Experiment:
  """Name or Experiment -> Experiment with ``smoke`` then ``overrides`` applied."""
  exp = get_experiment(experiment) if isinstance(experiment, str) else experiment
  if not isinstance(exp, Experiment):
    raise ConfigError(f"expected an experiment name or Experiment, got {experiment!r}")
  if smoke:
    exp = smoke_config(exp)
  return apply_overrides(exp, dict(overrides or {}))


def _task_sizes(task) -> tuple[int, int]:
  """(input symbols or features, outputs) of a task."""
  if task.family == "language":
    return task.vocab_size, task.vocab_size
  if task.family == "music":
    return 88, 88
  if task.family == "pixel":
    return 1, 10
  if task.name == "adding":
    return 2, 1
  return task.classes, task.classes  # copy


def _check_stable(exp: Experiment) -> None:
  if exp.train.stable and not exp.model.is_recurrent:
    raise ConfigError(
        f"{exp.name}: stable=True needs a recurrent backbone, not {exp.model.backbone}")


def build(exp: Experiment):
  """(task, model) for an experiment, sizes checked against the task."""
  task = tasks_lib.get_task(exp.task, **exp.options())
  n_in, n_out = _task_sizes(task)
  cfg = exp.model
  if cfg.input_size == 0:
    cfg = dataclasses.replace(cfg, input_size=n_in)
  if cfg.output_size == 0:
    cfg = dataclasses.replace(cfg, output_size=n_out)
  if cfg.input_size != n_in or cfg.output_size != n_out:
    raise ConfigError(f"{exp.name}: model sizes {cfg.input_size} -> {cfg.output_size} do not "
                      f"match task {exp.task!r} ({n_in} -> {n_out})")
  _check_stable(exp)
  try:
    return task, Model(cfg)
  except ValueError as e:  # a check that needs the task's sizes
    raise ConfigError(f"{exp.name}: {e}") from None


# ---------------------------------------------------------------------------
# Data.


class _Data:
  """Batches of one task with the experiment's batching rules."""

  def __init__(self, task, exp: Experiment, model: Model):
    self.task, self.exp, self.model = task, exp, model
    t = exp.train
    self.family = task.family
    self.lm_context = t.context
    truncated_rnn = model.config.is_recurrent and model.config.executor == "truncated"
    if self.family == "language" and self.lm_context is None and truncated_rnn:
      # The truncated model of the stack sees k inputs (cells.Stacked): exactly k of history.
      self.lm_context = model.config.k
    #: whether the carry flows from one training batch to the next.
    self.carry_across = (self.family == "language" and self.lm_context is None
                         and model.config.carries_state)
    self.valid_split = "valid" if "valid" in task.splits else None
    #: whether the training batches depend on the seed (shuffling).
    self.seeded = self.family != "language"

  def batches(self, split: str, *, train: bool, seed: int = 0, epoch: int = 0,
              context: Optional[int] = None, limit: int = 0) -> Iterator[dict]:
    t = self.exp.train
    bs = t.batch_size if train else t.eval_batch_size
    if self.family == "language":
      ctx = self.lm_context if context is None else context
      it = self.task.batches(split, bs, length=t.bptt, context=ctx, pad=True)
    elif self.family == "music":
      it = self.task.batches(split, bs, shuffle=train, seed=seed, epoch=epoch,
                             length_multiple=t.length_multiple, pad_remainder=True)
    else:
      it = self.task.batches(split, bs, shuffle=train, seed=seed, epoch=epoch,
                             pad_remainder=True)
    for i, b in enumerate(it):
      if limit and i >= limit:
        return
      yield b


def _units(batch: Mapping[str, np.ndarray]) -> float:
  """Input time steps that carry real data in a batch (for tokens/s)."""
  m = batch["mask"]
  if m.ndim >= 2:
    return float(m.sum())
  return float(m.sum()) * batch["inputs"].shape[1]


def _stack_batches(batches: Sequence[Mapping[str, np.ndarray]]) -> dict:
  """Stack per-model batches on a new axis 0, zero-padding to common shapes."""
  out = {}
  for key in batches[0]:
    arrs = [np.asarray(b[key]) for b in batches]
    shape = tuple(max(s) for s in zip(*(a.shape for a in arrs)))
    padded = []
    for a in arrs:
      if a.shape != shape:
        a = np.pad(a, [(0, n - s) for s, n in zip(a.shape, shape)])
      padded.append(a)
    out[key] = np.stack(padded)
  return out


# ---------------------------------------------------------------------------
# Optimiser.


class CarriedGradientsState(NamedTuple):
  """The gradient sum a PyTorch ``.grad`` holds when it is never zeroed."""
  total: optax.Updates


def carried_gradients(max_norm: float = 0.0) -> optax.GradientTransformation:
  r"""Gradients that are never zeroed, clipped as ``copymem_test.py`` clips them.

  A PyTorch loop without ``optimizer.zero_grad()`` accumulates every step's
  gradient in ``.grad``; TCN's ``copy_memory/copymem_test.py`` (Bai et al.,
  2018) also calls ``clip_grad_norm`` *before* ``backward``, so the clip
  rescales the carried sum and the new gradient is added after it. The update
  handed to the optimiser is

  .. math::  a_t = \operatorname{clip}(a_{t-1}, c) + g_t, \qquad a_0 = 0,

  with :math:`\operatorname{clip}(a, c) = a \min(1, c / \lVert a \rVert_2)`
  (global norm) and no clip for :math:`c \le 0`. It is a momentum of 1 whose
  memory is capped at norm :math:`c`: the step direction is dominated by past
  gradients once :math:`\lVert g_t \rVert \ll c`.

  Args:
    max_norm: the clip :math:`c` (``TrainConfig.clip``); 0 = none.

  Returns:
    An optax transformation; chain the optimiser after it (and no other clip).
  """

  clip = optax.clip_by_global_norm(max_norm) if max_norm > 0 else optax.identity()

  def init_fn(params):
    return CarriedGradientsState(total=optax.tree.zeros_like(params))

  def update_fn(updates, state, params=None):
    del params
    carried, _ = clip.update(state.total, clip.init(state.total))  # both stateless
    total = jax.tree_util.tree_map(jnp.add, carried, updates)
    return total, CarriedGradientsState(total=total)

  return optax.GradientTransformation(init_fn, update_fn)


def _optimizer_factory(t: TrainConfig):
  def make(learning_rate):
    parts = []
    if not t.zero_grad:
      parts.append(carried_gradients(t.clip))
    elif t.clip > 0:
      parts.append(optax.clip_by_global_norm(t.clip))
    momentum = t.momentum or None
    if t.optimizer == "sgd":
      parts.append(optax.sgd(learning_rate, momentum=momentum))
    elif t.optimizer == "adam":
      parts.append(optax.adam(learning_rate))
    else:  # PyTorch's RMSprop: alpha 0.99, eps outside the square root
      parts.append(optax.rmsprop(learning_rate, decay=0.99, eps=1e-8, eps_in_sqrt=False,
                                 momentum=momentum))
    return optax.chain(*parts)
  return make


def make_optimizer(t: TrainConfig) -> optax.GradientTransformation:
  """The optax optimiser of a config, with the learning rate injected (mutable)."""
  return optax.inject_hyperparams(_optimizer_factory(t))(learning_rate=t.lr)


def _set_lr(opt_state, lr):
  hp = dict(opt_state.hyperparams)
  hp["learning_rate"] = jnp.asarray(lr, dtype=jnp.asarray(hp["learning_rate"]).dtype)
  return opt_state._replace(hyperparams=hp)


# ---------------------------------------------------------------------------
# Learning-rate rules (host side, once per epoch).


def next_lr(rule: str, lr: float, t: TrainConfig, epoch: int, valid_losses: Sequence[float],
            improved: bool) -> float:
  """The learning rate after ``epoch`` (1-based) given the valid history.

  ``valid_losses`` is the history including this epoch's value, oriented so
  that lower is better.
  """
  if rule == "plateau":
    return lr if improved else lr / t.lr_decay
  if rule == "jsb":
    # TCN poly_music (and the authors' fork of it): if ep > 10 and vloss >
    # max(vloss_list[-3:]): lr /= 10; word_cnn compares with the last 5. A NaN
    # loss counts as the worst (Python's max and > would ignore it by position).
    losses = [math.inf if math.isnan(v) else v for v in valid_losses]
    prev = losses[:-1]
    if (epoch > t.lr_decay_after and len(prev) >= 1
        and losses[-1] > max(prev[-t.lr_decay_window:])):
      return lr / t.lr_decay
    return lr
  if rule == "step":
    return lr / t.lr_decay if epoch % t.lr_step_epochs == 0 else lr
  return lr


# ---------------------------------------------------------------------------
# Checkpoints (flax msgpack, written atomically).


def _save_checkpoint(path: str, tree, meta: dict) -> None:
  leaves = jax.tree_util.tree_leaves(tree)
  blob = serialization.msgpack_serialize(
      {"leaves": {str(i): np.asarray(a) for i, a in enumerate(leaves)},
       "meta": json.dumps(_json_safe(meta, nonfinite_as_null=False))})
  write_atomic(path, blob)


def _load_checkpoint(path: str, template):
  with open(path, "rb") as f:
    raw = serialization.msgpack_restore(f.read())
  treedef = jax.tree_util.tree_structure(template)
  leaves = [raw["leaves"][str(i)] for i in range(len(raw["leaves"]))]
  if len(leaves) != treedef.num_leaves:
    raise ValueError(f"checkpoint {path} does not match the model ({len(leaves)} arrays, "
                     f"expected {treedef.num_leaves})")
  ref = jax.tree_util.tree_leaves(template)
  leaves = [jnp.asarray(a, dtype=r.dtype).reshape(r.shape) for a, r in zip(leaves, ref)]
  return jax.tree_util.tree_unflatten(treedef, leaves), json.loads(raw["meta"])


# ---------------------------------------------------------------------------
# The trainer: M models, stacked on axis 0 when vmapped.


@dataclasses.dataclass
class _Member:
  """One model of a (possibly vmapped) group."""
  exp: Experiment
  seed: int
  run_id: str


class TrainingInterrupted(Exception):
  """SIGTERM arrived while training: the run checkpointed where it was and stopped."""


class RunInProgress(Exception):
  """Another process holds this run's lock: it is training it now.

  Attributes:
    run_id: the run whose lock is held.
  """

  def __init__(self, message: str, run_id: str):
    super().__init__(message)
    self.run_id = run_id


@contextlib.contextmanager
def _run_locks(out_dir: str, run_ids: Sequence[str]):
  """Hold ``checkpoints/<run_id>.lock`` exclusively for every run while they train.

  Two sweeps over overlapping grids (a command started twice, two shells, one
  with ``--vmap`` and one without) would otherwise both train a run, race on
  its checkpoint, and both append its row. The locks are ``flock``s: the
  kernel drops them when their holder dies, so a killed run never leaves one
  held (on a local disk; network file systems may not honour them). The empty
  files stay: removing one while held would let a process that had opened it
  and one that creates it anew both lock "it".

  Raises:
    RunInProgress: another process holds one of them.
  """
  with contextlib.ExitStack() as stack:
    for rid in sorted(set(run_ids)):
      path = os.path.join(out_dir, "checkpoints", f"{rid}.lock")
      os.makedirs(os.path.dirname(path), exist_ok=True)
      fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
      stack.callback(os.close, fd)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        raise RunInProgress(f"another process is training run {rid} now (it holds {path})",
                            rid) from None
    yield


# SIGTERM (what `timeout` and most job schedulers send) asks the run in
# progress to checkpoint at its next step and stop, instead of losing up to
# `checkpoint_seconds` of training; the request lasts for the rest of the
# process, so a sweep does not start its next run either.
_STOP = {"requested": False}


def _request_stop(signum, frame):
  del signum, frame
  _STOP["requested"] = True


@contextlib.contextmanager
def _stop_on_sigterm():
  """Installs the SIGTERM request handler for a run (main thread only) and restores the old one."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = signal.signal(signal.SIGTERM, _request_stop)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


class _Trainer:
  """Runs a group of models sharing shapes (one model when ``batched`` is False)."""

  def __init__(self, members: Sequence[_Member], out_dir: str, *, batched: bool,
               smoke: bool, progress: Optional[bool] = None, log=None):
    self.members = list(members)
    self.m = len(members)
    self.batched = batched
    self.smoke = smoke
    self.out_dir = out_dir
    self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    self.progress = sys.stderr.isatty() if progress is None else progress
    exp0 = members[0].exp
    for m in members[1:]:  # build() checks the first; stable is not in vmap_key
      _check_stable(m.exp)
    self.exp = exp0
    self.t = exp0.train
    self.task, self.model = build(exp0)
    self.data = _Data(self.task, exp0, self.model)
    self.metric = self.task.metric
    self.tx = make_optimizer(self.t)
    self.cells_tree = self.model.cells_tree()
    # Per-model projection: an index into `self.proj_specs`, the (λ, scheme)
    # pairs of the stable members; -1 = not projected.
    self.proj_specs = tuple(sorted({(m.exp.train.lam, m.exp.train.projection)
                                    for m in members if m.exp.train.stable}))
    self.proj_index = [self.proj_specs.index((m.exp.train.lam, m.exp.train.projection))
                       if m.exp.train.stable else -1 for m in members]
    self.shared_data = (not self.data.seeded) or len({m.seed for m in members}) == 1
    self.ckpt_dir = os.path.join(out_dir, "checkpoints",
                                 members[0].run_id if self.m == 1 else
                                 "vmap-" + hashlib.sha256("".join(
                                     x.run_id for x in members).encode()).hexdigest()[:16])
    # The commit is read now, when the code that trains is the code on disk:
    # git_state() is cached, so a commit made while a long sweep runs is not
    # what its rows record.
    git_state()
    self._compile()

  # ----------------------------------------------------------- tree helpers

  def _stack(self, trees):
    if not self.batched:
      return trees[0]
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)

  def _index(self, tree, i):
    if not self.batched:
      return tree
    return jax.tree_util.tree_map(lambda a: a[i], tree)

  # ------------------------------------------------------------ functions

  def _projected_tree(self, scheme: str):
    """What a scheme projects: every recurrent layer, or only the first, as
    the authors' code did (``weight_hh_l0``)."""
    layers = self.cells_tree["backbone"]
    if scheme != "authors" or not layers:
      return self.cells_tree
    return {**self.cells_tree, "backbone": layers[:1] + [None] * (len(layers) - 1)}

  def _project_one(self, params, lam: float, scheme: str):
    return stability.project_tree(self._projected_tree(scheme), params, lam,
                                  self.t.input_bound, scheme)

  def _project(self, params, proj_index: int):
    """One model's params projected by its spec (``proj_index`` into ``proj_specs``; -1: none)."""
    if proj_index < 0:
      return params
    return self._project_one(params, *self.proj_specs[proj_index])

  def _project_members(self, params):
    """A vmapped group's params, each member projected for its own λ and scheme.

    Members are gathered by (λ, scheme) with static indices and only they are projected
    (a vmapped select would run every λ's projection for every member, the
    unstable ones included: the projection -- an eigendecomposition or an
    l1-ball sort per step -- is what a stable run's step costs).
    """
    for j, (lam, scheme) in enumerate(self.proj_specs):
      idx = np.flatnonzero(np.asarray(self.proj_index) == j)
      sub = jax.tree_util.tree_map(lambda a: a[idx], params)
      sub = jax.vmap(lambda p, lam=lam, scheme=scheme: self._project_one(p, lam, scheme))(sub)
      params = jax.tree_util.tree_map(lambda a, b: a.at[idx].set(b), params, sub)
    return params

  def _compile(self):
    model, task, tx, metric = self.model, self.task, self.tx, self.metric
    carry_across = self.data.carry_across
    sum_loss = self.t.loss_reduction == "sum"

    def train_step(state, batch, proj_index):
      # optax mixes Python floats with int32 counters (Adam's bias correction):
      # trace under standard promotion even where a caller set it to strict.
      with jax.numpy_dtype_promotion("standard"):
        return _train_step(state, batch, proj_index)

    def _train_step(state, batch, proj_index):
      params, carry = state["params"], state["carry"]
      key = jax.random.fold_in(state["rng"], state["step"])

      def loss_fn(p):
        out, new_carry = model.apply(p, batch["inputs"], carry if carry_across else None,
                                     key=key, train=True)
        loss = task.loss(out, batch)
        objective = loss * jnp.sum(batch["mask"]) if sum_loss else loss
        return objective, (loss, new_carry)

      (_, (loss, new_carry)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      updates, new_opt = tx.update(grads, state["opt"], params)
      new_params = optax.apply_updates(params, updates)
      if proj_index is not None:
        new_params = self._project(new_params, proj_index)
      gnorm = optax.tree.norm(grads)
      ok = state["alive"] & jnp.isfinite(loss) & jnp.isfinite(gnorm)
      keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)
      new_state = {
          "params": keep(new_params, params),
          "opt": keep(new_opt, state["opt"]),
          "carry": keep(jax.lax.stop_gradient(new_carry), carry) if carry_across else carry,
          "rng": state["rng"],
          "step": state["step"] + 1,
          "alive": ok,
          "first_bad": jnp.where(state["alive"] & ~ok, state["step"], state["first_bad"]),
          "updates": state["updates"] + ok.astype(jnp.int32),
      }
      return new_state, jnp.where(ok, loss, jnp.zeros_like(loss))

    def eval_step(params, carry, batch):
      out, new_carry = model.apply(params, batch["inputs"], carry, train=False)
      total, count = metric(out, batch)
      return total, count, new_carry

    batch_axis = None if self.shared_data else 0
    if self.batched:
      # The members' steps run vmapped without the projection, which follows
      # per λ on just its members. A member whose step was rejected (non-finite)
      # kept its old, already projected params: projecting again is the identity.
      def batched_step(state, batch):
        new_state, loss = jax.vmap(lambda s, b: train_step(s, b, None),
                                   in_axes=(0, batch_axis))(state, batch)
        return {**new_state, "params": self._project_members(new_state["params"])}, loss

      self._train_step = jax.jit(batched_step, donate_argnums=(0,))
      eval_step = jax.vmap(eval_step, in_axes=(0, 0, None))
    else:
      pi = self.proj_index[0]
      self._train_step = jax.jit(lambda state, batch: train_step(state, batch, pi),
                                 donate_argnums=(0,))
    self._eval_step = jax.jit(eval_step)

  # ---------------------------------------------------------------- state

  def _init_state(self):
    states = []
    for mem in self.members:
      init_key, drop_key = jax.random.split(jax.random.PRNGKey(mem.seed))
      params = self.model.init(init_key)
      # Start inside the stable set (the projection is part of the model).
      if mem.exp.train.stable:
        params = self._project_one(params, mem.exp.train.lam, mem.exp.train.projection)
      with jax.numpy_dtype_promotion("standard"):
        opt = _set_lr(self.tx.init(params), mem.exp.train.lr)
      states.append({
          "params": params, "opt": opt,
          "carry": self._zero_carry() if self.data.carry_across else None,
          "rng": drop_key, "step": jnp.zeros((), jnp.int32), "alive": jnp.ones((), bool),
          "first_bad": jnp.full((), -1, jnp.int32), "updates": jnp.zeros((), jnp.int32),
      })
    return self._stack(states)

  def _zero_carry(self):
    # Distinct buffers per leaf (an LSTM's (c, h) zeros would otherwise be one
    # array donated twice).
    return jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True),
                                  self.model.initial_carry((self.t.batch_size,)))

  def _reset_carry(self, state):
    if not self.data.carry_across:
      return state
    return {**state, "carry": self._stack([self._zero_carry()] * self.m)}

  # ----------------------------------------------------------- evaluation

  def evaluate(self, params, split: str, *, model: Optional[Model] = None,
               context: Optional[int] = None) -> list[float]:
    """Metric per model over a split (state carried across LM windows)."""
    t = self.t
    model = model or self.model
    eval_step = self._eval_step if model is self.model else self._other_eval(model)
    carry_across = self.data.family == "language" and model.config.carries_state and \
        (context if context is not None else self.data.lm_context) is None
    carry = None
    totals = np.zeros(self.m)
    counts = np.zeros(self.m)
    for batch in self.data.batches(split, train=False, context=context,
                                   limit=t.max_eval_batches):
      if carry_across and carry is None:
        carry = self._stack([model.initial_carry(batch["inputs"].shape[:1])] * self.m)
      total, count, new_carry = eval_step(params, carry if carry_across else None, batch)
      if carry_across:
        carry = new_carry
      totals += np.atleast_1d(np.asarray(total, np.float64))
      counts += np.atleast_1d(np.asarray(count, np.float64))
    return [float(self.metric.finalize(tt, c)) if c > 0 else math.nan
            for tt, c in zip(totals, counts)]

  def _other_eval(self, model: Model):
    metric = self.metric

    def eval_step(params, carry, batch):
      out, new_carry = model.apply(params, batch["inputs"], carry, train=False)
      total, count = metric(out, batch)
      return total, count, new_carry

    if self.batched:
      eval_step = jax.vmap(eval_step, in_axes=(0, 0, None))
    return jax.jit(eval_step)

  def truncation_study(self, params, ks: Sequence[int]) -> list[list[dict]]:
    """Per model, per k: test metric of truncated(k) and the gap ``||y - y^k||``."""
    full = self.model if self.model.config.executor == "scan" else \
        self.model.with_executor("scan")
    metric = self.metric
    out = [[] for _ in range(self.m)]
    for k in ks:
      trunc = self.model.with_executor("truncated", k)

      def step(p, batch, trunc=trunc):
        y, _ = full.apply(p, batch["inputs"], None, train=False)
        yk, _ = trunc.apply(p, batch["inputs"], None, train=False)
        total, count = metric(yk, batch)
        d = jnp.linalg.norm((y - yk).astype(jnp.float32), axis=-1)
        m = batch["mask"].astype(jnp.float32)
        m = jnp.broadcast_to(m.reshape(m.shape + (1,) * (d.ndim - m.ndim)), d.shape)
        return total, count, jnp.sum(d * m), jnp.max(d * m), jnp.sum(m)

      if self.batched:
        step = jax.vmap(step, in_axes=(0, None))
      step = jax.jit(step)
      acc = np.zeros((5, self.m))
      acc[3] = 0.0
      # Scored tokens get exactly k tokens of history, what truncated(k) can see.
      for batch in self.data.batches("test", train=False, context=k if
                                     self.data.family == "language" else None,
                                     limit=self.t.max_eval_batches):
        vals = [np.atleast_1d(np.asarray(v, np.float64)) for v in step(params, batch)]
        acc[0] += vals[0]
        acc[1] += vals[1]
        acc[2] += vals[2]
        acc[3] = np.maximum(acc[3], vals[3])
        acc[4] += vals[4]
      for i in range(self.m):
        out[i].append({
            "k": int(k),
            "test_metric": float(metric.finalize(acc[0, i], acc[1, i])) if acc[1, i] else None,
            "gap_mean": float(acc[2, i] / acc[4, i]) if acc[4, i] else None,
            "gap_max": float(acc[3, i]),
        })
    return out

  def certified_bound(self, params) -> Optional[float]:
    if not self.model.config.is_recurrent:
      return None
    bounds = [float(stability.lipschitz_bound(cell, p, self.t.input_bound))
              for cell, p in zip(self.model.cells, params["backbone"])]
    return max(bounds)

  def contraction(self, params) -> Optional[float]:
    """Max over layers of the measured contraction along test trajectories.

    Up to ``contraction_rows`` real sequences of each of the first
    ``contraction_batches`` test batches, from the zero state, cut to their
    common real length and to ``contraction_steps`` steps.
    """
    if not self.model.config.is_recurrent:
      return None
    t = self.t
    best = 0.0
    for batch in self.data.batches("test", train=False, limit=t.contraction_batches):
      mask = batch["mask"].reshape(batch["mask"].shape[0], -1)
      rows = np.flatnonzero(mask.max(axis=1) > 0)[:t.contraction_rows]
      if rows.size == 0:
        continue
      length = batch["inputs"].shape[1]
      if batch["mask"].ndim >= 2:  # per-step masks: stay within the real steps
        length = int(mask[rows].sum(axis=1).min())
      length = max(1, min(length, t.contraction_steps))
      inputs = jnp.asarray(batch["inputs"][rows][:, :length])
      _, _, layer_inputs = self.model.features(params, inputs, None, return_layers=True)
      for cell, p, xs in zip(self.model.cells, params["backbone"], layer_inputs):
        best = max(best, float(_contraction_fn(cell)(p, xs)))
    return best

  # ------------------------------------------------------------------- run

  def run(self) -> list[dict]:
    """Trains (resuming from a checkpoint), then evaluates; rows of the members.

    Raises:
      TrainingInterrupted: SIGTERM arrived; the run checkpointed at its last
        step and the same call resumes it.
      RunInProgress: another process is training the same run(s) now.
    """
    with _stop_on_sigterm(), _run_locks(self.out_dir, [m.run_id for m in self.members]):
      # Checked again under the lock: a process that held it may have just
      # finished these runs.
      done = {r.get("run_id"): r for r in read_results(self.out_dir)}
      if all(m.run_id in done for m in self.members):
        return [done[m.run_id] for m in self.members]
      return self._run()

  def _run(self) -> list[dict]:
    t = self.t
    if _STOP["requested"]:
      raise TrainingInterrupted(f"{self.exp.name}: not started, SIGTERM arrived before it")
    start_wall = time.monotonic()
    os.makedirs(self.ckpt_dir, exist_ok=True)
    ckpt_path = os.path.join(self.ckpt_dir, "state.msgpack")
    state = self._init_state()
    best_params = jax.tree_util.tree_map(jnp.copy, state["params"])
    meta = {
        "epoch": 0, "step_in_epoch": 0, "lr": [m.exp.train.lr for m in self.members],
        "best_valid": [None] * self.m, "valid_hist": [[] for _ in range(self.m)],
        "history": [[] for _ in range(self.m)], "wall_s": 0.0, "train_s": 0.0,
        "train_units": 0.0, "epoch_loss": [0.0] * self.m, "epoch_batches": 0,
        "diverged_step": [None] * self.m,
    }
    if os.path.exists(ckpt_path):
      (state, best_params), meta = _load_checkpoint(ckpt_path, (state, best_params))
      self.log(f"resuming {self.exp.name} from epoch {meta['epoch']} "
               f"step {meta['step_in_epoch']} ({ckpt_path})")
    meta.setdefault("sessions", []).append({
        "epoch": meta["epoch"], "step_in_epoch": meta["step_in_epoch"], **git_state(),
        "device_kind": jax.devices()[0].device_kind})
    wall_before = meta["wall_s"]

    def save():
      meta["wall_s"] = wall_before + (time.monotonic() - start_wall)
      _save_checkpoint(ckpt_path, (state, best_params), meta)

    steps_per_epoch = None
    compiled_shapes = set()  # batch shapes whose train step has been compiled
    last_ckpt = time.monotonic()

    last_epoch = meta["epoch"] if meta.get("stopped") else t.epochs
    for epoch in range(meta["epoch"], last_epoch):
      if meta["step_in_epoch"] == 0:
        state = self._reset_carry(state)
        meta["epoch_loss"], meta["epoch_batches"] = [0.0] * self.m, 0
      skip = meta["step_in_epoch"]
      iters = [self.data.batches("train", train=True, seed=mem.seed, epoch=epoch,
                                 limit=t.max_steps_per_epoch)
               for mem in (self.members[:1] if self.shared_data else self.members)]
      bar = _progress(self.progress, steps_per_epoch,
                      f"{self.exp.name} epoch {epoch + 1}/{t.epochs}")
      pending = []  # device losses since the last sync
      t0 = time.monotonic()
      units = 0.0
      n = 0
      for n, group in enumerate(zip(*iters), start=1):
        if n <= skip:
          bar.update(1)
          continue
        batch = group[0] if self.shared_data else _stack_batches(group)
        batch_units = _units(group[0])
        shape = tuple(batch["inputs"].shape)
        compiles = shape not in compiled_shapes
        if compiles:
          # A new shape (the first step; music lengths) compiles: close the
          # timing window before it and reopen it after, so that neither its
          # time nor its tokens count in the throughput.
          jax.block_until_ready(state["params"])
          meta["train_s"] += time.monotonic() - t0
          meta["train_units"] += units
          units = 0.0
        state, loss = self._train_step(state, batch)
        pending.append(loss)
        if compiles:
          jax.block_until_ready(loss)
          compiled_shapes.add(shape)
          t0 = time.monotonic()
        else:
          units += batch_units
        meta["step_in_epoch"] = n
        if _STOP["requested"]:
          self._sync(pending, meta)
          jax.block_until_ready(state["params"])
          meta["train_s"] += time.monotonic() - t0
          meta["train_units"] += units
          save()
          bar.close()
          raise TrainingInterrupted(
              f"{self.exp.name}: SIGTERM in epoch {epoch + 1} after step {n}; checkpointed to "
              f"{ckpt_path}, and the same command resumes it")
        if len(pending) >= _LOG_EVERY:
          self._sync(pending, meta)
          pending = []
          elapsed = time.monotonic() - t0
          rate = units / max(elapsed, 1e-9)
          bar.set_postfix(loss=f"{np.mean(meta['epoch_loss']) / max(meta['epoch_batches'], 1):.4g}",
                          tok_s=f"{rate:,.0f}")
          if time.monotonic() - last_ckpt > t.checkpoint_seconds:
            meta["train_s"] += time.monotonic() - t0
            meta["train_units"] += units
            save()
            # The save (device-to-host copy, serialisation, fsync) is not training.
            t0, units = time.monotonic(), 0.0
            last_ckpt = time.monotonic()
        bar.update(1)
      self._sync(pending, meta)
      jax.block_until_ready(state["params"])
      meta["train_s"] += time.monotonic() - t0
      meta["train_units"] += units
      bar.close()
      steps_per_epoch = n
      # Divergence. A member that diverged in an earlier epoch is finished, as
      # a separate run would be: no more history, epochs or lr decisions.
      ended = [d is not None for d in meta["diverged_step"]]
      alive = np.atleast_1d(np.asarray(state["alive"]))
      first_bad = np.atleast_1d(np.asarray(state["first_bad"]))
      for i in range(self.m):
        if not alive[i] and meta["diverged_step"][i] is None:
          meta["diverged_step"][i] = int(first_bad[i])
          self.log(f"{self.members[i].exp.name} seed {self.members[i].seed}: non-finite loss "
                   f"at step {int(first_bad[i])}: diverged")
      # Validation, lr rule, best params.
      valid = self.evaluate(state["params"], self.data.valid_split) \
          if self.data.valid_split else [None] * self.m
      test_now = self.evaluate(state["params"], "test") if t.test_every_epoch else None
      improved_any = []
      for i in range(self.m):
        if ended[i]:
          improved_any.append(False)
          continue
        mean_loss = meta["epoch_loss"][i] / max(meta["epoch_batches"], 1)
        v = valid[i]
        if v is not None and alive[i]:
          oriented = -v if self.metric.higher_is_better else v
          meta["valid_hist"][i].append(oriented)
          best = meta["best_valid"][i]
          # A non-finite metric is never the best, not even the first one.
          improved = math.isfinite(v) and (
              best is None or (v > best if self.metric.higher_is_better else v < best))
          if improved:
            meta["best_valid"][i] = v
          meta["lr"][i] = next_lr(t.lr_schedule, meta["lr"][i], t, epoch + 1,
                                  meta["valid_hist"][i], improved)
          improved_any.append(improved)
        else:
          improved_any.append(False)
          if alive[i]:
            meta["lr"][i] = next_lr(t.lr_schedule if t.lr_schedule == "step" else "none",
                                    meta["lr"][i], t, epoch + 1, [], False)
        entry = {"epoch": epoch + 1, "train_loss": mean_loss if alive[i] else None,
                 "valid_metric": v, "lr": meta["lr"][i],
                 "wall_s": wall_before + time.monotonic() - start_wall}
        if test_now is not None and alive[i]:
          entry["test_metric"] = test_now[i]
        if self.model.config.is_recurrent and alive[i]:
          # Stability over training (does a nominally unstable model stay in
          # the stable regime on data?): the certified bound every epoch, the
          # measured contraction every ``contraction_every`` epochs and at the end.
          p_i = self._index(state["params"], i)
          entry["certified_bound"] = self.certified_bound(p_i)
          if t.contraction_every and ((epoch + 1) % t.contraction_every == 0
                                      or epoch + 1 == t.epochs or epoch == 0):
            entry["empirical_contraction"] = self.contraction(p_i)
        meta["history"][i].append(entry)
      if self.data.valid_split:
        mask = np.asarray(improved_any)
        best_params = _select(best_params, state["params"], mask, self.batched)
      else:
        best_params = jax.tree_util.tree_map(jnp.copy, state["params"])
      state = {**state, "opt": _set_lr(state["opt"], self._stack(
          [jnp.asarray(lr, jnp.float32) for lr in meta["lr"]]) if self.batched
          else meta["lr"][0])}
      self.log(self._epoch_line(epoch, meta, valid))
      meta["epoch"], meta["step_in_epoch"] = epoch + 1, 0
      if not alive.any():
        # Recorded so that a kill during _finish does not train another epoch on resume.
        meta["stopped"] = True
      save()
      last_ckpt = time.monotonic()
      if meta.get("stopped"):
        break
    return self._finish(state, best_params, meta, wall_before, start_wall)

  def _sync(self, pending, meta):
    if not pending:
      return
    losses = np.asarray(jnp.stack(pending), np.float64).reshape(len(pending), -1)
    for i in range(self.m):
      meta["epoch_loss"][i] += float(losses[:, i].sum())
    meta["epoch_batches"] += len(pending)

  def _epoch_line(self, epoch, meta, valid) -> str:
    parts = []
    for i in range(self.m):
      loss = meta["epoch_loss"][i] / max(meta["epoch_batches"], 1)
      v = valid[i]
      parts.append(f"train {loss:.4f}" + (f" valid {v:.4f}" if v is not None else "")
                   + f" lr {meta['lr'][i]:.3g}")
    rate = meta["train_units"] / max(meta["train_s"], 1e-9)
    return (f"{self.exp.name} epoch {epoch + 1}/{self.t.epochs}: " + " | ".join(parts)
            + f"  ({rate:,.0f} tokens/s per model)")

  def _finish(self, state, best_params, meta, wall_before, start_wall) -> list[dict]:
    t = self.t
    rows = []
    md = run_metadata(self.model.config.dtype)
    ks = tuple(t.eval_ks)
    alive = np.atleast_1d(np.asarray(state["alive"]))
    updates = np.atleast_1d(np.asarray(state["updates"]))
    test = self.evaluate(best_params, "test")
    curves = self.truncation_study(best_params, ks) if ks else [[] for _ in range(self.m)]
    wall = wall_before + time.monotonic() - start_wall
    for i, mem in enumerate(self.members):
      p_i = self._index(best_params, i)
      diverged = meta["diverged_step"][i] is not None or not alive[i]
      cert = self.certified_bound(self._index(state["params"], i) if diverged else p_i)
      emp = None if diverged else self.contraction(p_i)
      exp = mem.exp
      cfg = exp.model
      row = {
          "experiment": exp.name, "task": exp.task, "model": cfg.backbone,
          "executor": cfg.executor_name,
          "k": cfg.k if (cfg.is_recurrent and cfg.executor == "truncated") else None,
          "stable": bool(exp.train.stable), "lam": exp.train.lam if exp.train.stable else None,
          "seed": int(mem.seed), "metric_name": self.metric.name,
          "valid_metric": meta["best_valid"][i],
          "test_metric": None if diverged else test[i],
          "epochs": len(meta["history"][i]), "steps": int(updates[i]),
          "wall_s": round(wall, 3),
          "tokens_per_s": (meta["train_units"] / meta["train_s"]) if meta["train_s"] > 0 else None,
          "diverged": bool(diverged), "diverged_step": meta["diverged_step"][i],
          "certified_bound": cert, "empirical_contraction": emp,
          "config": {**exp.resolved_dict(), "smoke": self.smoke,
                     "vmap_group_size": self.m if self.batched else 1},
          "git_sha": md.get("git_sha"), "git_dirty": md.get("git_dirty"),
          "versions": md.get("versions"), "device_kind": md.get("device_kind"),
          "device_count": md.get("device_count"), "dtype": md.get("dtype"),
          "sessions": meta["sessions"], "run_id": mem.run_id,
      }
      assert tuple(row) == RESULT_KEYS
      rows.append(row)
    # Everything slow (test, truncation study, contraction) is done: the rows
    # go out in one write after the curves, so a kill leaves all of a group's
    # rows or none (a group resumed without some members would name a new
    # checkpoint and retrain them from epoch 0).
    written = {r.get("run_id") for r in read_results(self.out_dir)}
    for i, row in enumerate(rows):
      write_atomic(os.path.join(self.out_dir, "curves", f"{row['run_id']}.json"), json.dumps(
          _json_safe({"run_id": row["run_id"], "experiment": row["experiment"],
                      "seed": row["seed"], "metric_name": self.metric.name, "lam": row["lam"],
                      "certified_bound": row["certified_bound"],
                      "history": meta["history"][i], "truncation": curves[i]}), indent=1))
    append_results(self.out_dir, [row for row in rows if row["run_id"] not in written])
    _remove_tree(self.ckpt_dir)
    return [_json_safe(row) for row in rows]


_CONTRACTION_FNS: dict = {}


def _contraction_fn(cell):
  fn = _CONTRACTION_FNS.get(cell)
  if fn is None:
    fn = jax.jit(lambda p, xs: stability.empirical_contraction(cell, p, xs))
    _CONTRACTION_FNS[cell] = fn
  return fn


def _select(best, current, improved: np.ndarray, batched: bool):
  if not batched:  # copy: the training step donates (reuses) the current buffers
    return jax.tree_util.tree_map(jnp.copy, current) if bool(improved[0]) else best
  mask = jnp.asarray(improved)
  return jax.tree_util.tree_map(
      lambda c, b: jnp.where(mask.reshape((-1,) + (1,) * (c.ndim - 1)), c, b), current, best)


def _remove_tree(path: str) -> None:
  if not os.path.isdir(path):
    return
  for name in os.listdir(path):
    os.unlink(os.path.join(path, name))
  os.rmdir(path)


class _NoBar:
  def update(self, n=1):
    pass

  def set_postfix(self, **kw):
    pass

  def close(self):
    pass


def _progress(enabled: bool, total, desc: str):
  if not enabled:
    return _NoBar()
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  return tqdm(total=total, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)


# ---------------------------------------------------------------------------
# Public entry points.


def _existing(out_dir: str, rid: str) -> Optional[dict]:
  for row in read_results(out_dir):
    if row.get("run_id") == rid:
      return row
  return None


def run_experiment(experiment, *, seed: int = 0, out_dir: str,
                   overrides: Optional[Mapping[str, Any]] = None, smoke: bool = False,
                   progress: Optional[bool] = None) -> dict:
  """Train and evaluate one experiment; append its row to ``out_dir/results.jsonl``.

  Args:
    experiment: a registered name or an :class:`~seqbench.experiments.Experiment`.
    seed: init, data-order and dropout seed.
    out_dir: where results, curves and checkpoints go.
    overrides: ``{"train.lr": 0.1, "hidden_size": "64", ...}`` (see
      :func:`seqbench.experiments.apply_overrides`).
    smoke: shrink to a run of seconds (:func:`seqbench.experiments.smoke`).
    progress: show a progress bar (default: when stderr is a terminal).

  Returns:
    The result row (a dict with :data:`RESULT_KEYS`). If a row with the same
    ``run_id`` already exists in ``out_dir`` it is returned without training.

  Raises:
    ConfigError: bad experiment name or override.
    seqbench.tasks.DataError: the task's data is missing or broken.
  """
  exp = resolve(experiment, overrides, smoke)
  seed = check_seed(seed)
  rid = run_id(exp, seed, smoke)
  done = _existing(out_dir, rid)
  if done is not None:
    return done
  trainer = _Trainer([_Member(exp, seed, rid)], out_dir, batched=False, smoke=smoke,
                     progress=progress)
  return trainer.run()[0]


#: Fields that may differ between the members of a vmapped group.
VMAP_VARIABLE_FIELDS = ("stable", "lam", "projection", "lr")


def vmap_key(experiment) -> tuple:
  """What must be equal for two resolved experiments to train in one vmapped program.

  Everything but the name and :data:`VMAP_VARIABLE_FIELDS` (``train.stable``,
  ``train.lam``, ``train.projection``, ``train.lr``): the stable and unstable
  variants of a row (under either projection scheme), or the points of a λ
  sweep, share this key; seeds never enter it.
  """
  train = tuple((f.name, getattr(experiment.train, f.name))
                for f in dataclasses.fields(experiment.train)
                if f.name not in VMAP_VARIABLE_FIELDS)
  return (experiment.task, experiment.task_options, experiment.model, train)


#: Task families whose training batches, once shuffled by the seed, differ in
#: length from one seed to the next (one variable-length piece per batch).
_VARIABLE_LENGTH_FAMILIES = ("music",)


def vmap_seeds_together(experiment) -> bool:
  """Whether different seeds of a resolved experiment should share a vmapped program.

  They can always (results equal separate runs); it pays where their batches
  have one shape. Music batches are one piece each, shuffled by the seed, so a
  group of seeds pads every step to its longest member's piece: for
  Nottingham, E[max of 6] is 1.68x the mean length. Measured on the 2-core CPU
  (capped runs, tokens/s excluding compilation), 3 seeds x stable/unstable in
  one program against the seed-0 stable/unstable pair alone: tanh-RNN 1,878
  vs 6,267 tokens/s per model, LSTM 1,014 vs 3,769 -- the pairs one after the
  other finish 1.11x (RNN) and 1.24x (LSTM) sooner. So for these tasks only
  runs with the same seed (the same batches) are grouped.
  """
  family = tasks_lib.task_class(experiment.task).family
  return family not in _VARIABLE_LENGTH_FAMILIES


def run_experiments_vmapped(specs: Iterable, *, out_dir: str, smoke: bool = False,
                            progress: Optional[bool] = None) -> list[dict]:
  """Train several variants together in one compiled program (vmap over models).

  Args:
    specs: items ``(experiment, seed)`` or ``(experiment, seed, overrides)``
      (experiment: a name or an Experiment). After overrides the experiments
      must be identical except for ``train.stable``, ``train.lam``,
      ``train.lr`` (:data:`VMAP_VARIABLE_FIELDS`) and the experiment name;
      seeds may differ.
    out_dir: as :func:`run_experiment`.
    smoke: as :func:`run_experiment`.
    progress: as :func:`run_experiment`.

  Returns:
    One row per spec, in order, each equal (up to float round-off) to the row
    of the separate run with the same ``run_id``; rows already present in
    ``out_dir`` are returned as they are and their runs are not repeated.
  """
  members = []
  for spec in specs:
    spec = tuple(spec)
    exp_ref, seed = spec[0], check_seed(spec[1])
    overrides = spec[2] if len(spec) > 2 else {}
    exp = resolve(exp_ref, overrides, smoke)
    members.append(_Member(exp, seed, run_id(exp, seed, smoke)))
  if not members:
    return []
  ref = members[0].exp
  for mem in members[1:]:
    if vmap_key(mem.exp) != vmap_key(ref):
      a, b = ref.resolved_dict(), mem.exp.resolved_dict()
      diff = [f"{s}.{k}" for s in ("model", "train") for k in a[s]
              if a[s][k] != b[s][k] and k not in VMAP_VARIABLE_FIELDS]
      if a["task"] != b["task"] or a["task_options"] != b["task_options"]:
        diff.append("task")
      raise ConfigError(f"vmapped runs must share shapes and settings; {mem.exp.name} differs "
                        f"from {ref.name} in {', '.join(diff)}")
  results: list[Optional[dict]] = [_existing(out_dir, m.run_id) for m in members]
  todo = [m for m, r in zip(members, results) if r is None]
  if todo:
    trainer = _Trainer(todo, out_dir, batched=True, smoke=smoke, progress=progress)
    fresh = iter(trainer.run())
    results = [r if r is not None else next(fresh) for r in results]
  return results


class _ArgumentParser(argparse.ArgumentParser):

  def error(self, message):
    raise ConfigError(message)


def train_main(argv=None) -> int:
  """``seqbench train EXPERIMENT [--set key=value ...] [--seed N] [--out DIR] [--smoke]``."""
  parser = _ArgumentParser(
      prog="seqbench train", description="Train one named experiment (seqbench list).")
  parser.add_argument("experiment")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config field: model.X, train.X, task.X or a unique X")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default="out", help="output directory (default: out)")
  parser.add_argument("--smoke", action="store_true", help="a < 1 minute run of the same setup")
  parser.add_argument("--no-progress", action="store_true", help="no progress bar")
  argv = sys.argv[1:] if argv is None else list(argv)
  try:
    args = parser.parse_args(argv)
    overrides = parse_set_args(args.set)
    resolve(args.experiment, overrides, args.smoke)  # validate before any work
    check_seed(args.seed)
    ensure_out_dir(args.out)
  except ConfigError as e:
    print(f"seqbench train: {e}", file=sys.stderr)
    return 2
  try:
    row = run_experiment(args.experiment, seed=args.seed, out_dir=args.out, smoke=args.smoke,
                         overrides=overrides, progress=False if args.no_progress else None)
  except ConfigError as e:
    print(f"seqbench train: {e}", file=sys.stderr)
    return 2
  except tasks_lib.DataError as e:
    print(f"seqbench train: {e}", file=sys.stderr)
    return 1
  except TrainingInterrupted as e:
    print(f"seqbench train: {e}", file=sys.stderr)
    return 128 + signal.SIGTERM
  except RunInProgress as e:
    print(f"seqbench train: {e}", file=sys.stderr)
    return 1
  status = (f"DIVERGED at step {row['diverged_step']}" if row["diverged"] else
            f"test {row['metric_name']} {row['test_metric']:.4f}")
  print(f"{row['experiment']} seed {row['seed']}: {status} "
        f"(valid {row['valid_metric']}, {row['epochs']} epochs, {row['wall_s']:.1f} s) "
        f"-> {os.path.join(args.out, RESULTS_FILE)}")
  return 0


__all__ = ["run_experiment", "run_experiments_vmapped", "train_main", "append_result",
           "append_results", "ensure_out_dir", "check_seed",
           "TrainingInterrupted", "RunInProgress",
           "read_results", "run_id", "resolve", "build", "make_optimizer", "next_lr",
           "RESULT_KEYS", "RESULTS_FILE", "TrainConfig", "ModelConfig"]


if __name__ == "__main__":
  sys.exit(train_main(sys.argv[1:]))
