"""Experiment configuration: frozen dataclasses, overrides, the smoke shrink.

An :class:`Experiment` is everything a run needs except the seed: the task
(and its options), a :class:`~seqbench.models.ModelConfig`, a
:class:`TrainConfig`, and what the paper published. Overrides are parsed
against the dataclass fields, so a typo is an error, not an ignored key::

    apply_overrides(exp, {"train.lr": "0.1", "hidden_size": 64, "task.length": 200})

Keys are ``model.FIELD``, ``train.FIELD``, ``task.OPTION`` or a bare field name
that belongs to exactly one of model/train (``lr``, ``hidden_size``,
``stable``, ...). String values are parsed as the field's type (``"1,2,4"`` for
a tuple of ints, ``none`` for an optional field).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from typing import Any, Mapping, Optional

from seqbench.models import ModelConfig


class ConfigError(ValueError):
  """A bad experiment name, override key or value (one line, for the CLI)."""


OPTIMIZERS = ("sgd", "adam", "rmsprop")
LR_SCHEDULES = ("none", "plateau", "jsb", "step")
#: ``seqbench.stability.PROJECTION_SCHEMES`` (a test keeps them equal).
PROJECTIONS = ("certified", "authors")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How a model is trained and evaluated (one generic loop for every task).

  Attributes:
    optimizer: ``sgd``, ``adam`` or ``rmsprop`` (optax).
    lr: initial learning rate.
    momentum: SGD / RMSprop momentum (0 = none).
    clip: global gradient-norm clip (0 = none).
    zero_grad: ``False`` trains as a PyTorch loop that never calls
      ``zero_grad`` (TCN ``copy_memory/copymem_test.py``): the step sees the
      running sum of all gradients, and ``clip`` is applied to the carried sum
      before the new gradient is added, as that script's order does
      (:func:`seqbench.train.carried_gradients`). Only for reproducing it.
    loss_reduction: ``mean`` (the task's loss: mean over scored units) or
      ``sum`` (times the number of scored units in the batch: the TCN
      ``poly_music`` code, and so the authors' JSB code, minimise the NLL
      *summed* over a sequence's frames, which sets the scale of lr and clip).
    epochs: passes over the training split.
    batch_size: training batch (sequences, or LM rows).
    eval_batch_size: evaluation batch (pytorch/examples LM: 10).
    bptt: LM window length L (scored positions per window).
    context: LM only: give every scored token this many inputs of context in
      independent windows (no carried state); None = consecutive windows with
      the state carried (truncated BPTT). Defaults to ``k`` for the truncated
      executor.
    length_multiple: pad variable-length sequences (music) to a multiple of
      this, to bound the number of compiled shapes.
    lr_schedule: ``none``; ``plateau`` (divide by ``lr_decay`` when the valid
      metric does not improve: the word-LM rule, ÷4); ``jsb`` (the authors'
      JSB rule: after epoch ``lr_decay_after`` (10), divide by ``lr_decay``
      (10) when the valid loss exceeds the max of the previous 3); ``step``
      (divide every ``lr_step_epochs``).
    lr_decay: the divisor of the schedule.
    lr_step_epochs: period of the ``step`` schedule.
    lr_decay_after: first epoch at which the ``jsb`` rule may fire.
    lr_decay_window: how many previous epochs the ``jsb`` rule compares with
      (3 in ``poly_music``; TCN ``word_cnn`` uses 5).
    stable: project every recurrent layer onto the stable set after every
      update (Miller & Hardt's projected gradient descent).
    lam: the projection's target contraction factor.
    input_bound: ``||x||_inf`` bound assumed by the LSTM/GRU certificate.
    projection: ``certified`` (default: :func:`seqbench.stability.project`
      on every layer, the set whose certified bound is ``lam``) or
      ``authors`` (what Miller & Hardt's code does: the first layer only, the
      LSTM's columns rescaled to fixed l1 norms, biases free;
      :func:`seqbench.stability.authors_normalise`; needs ``lam = 1``).
    eval_ks: after training, also evaluate the best model as the truncated
      model for each k (the truncation study; metric and gap vs k go to
      ``OUT/curves/RUN_ID.json``).
    test_every_epoch: also evaluate the current parameters on test after
      every epoch, into the per-epoch history (Bai et al. report the mean test
      loss of the last 3 epochs; the report shows it beside the best-valid
      number). Logging only: not part of a run's identity.
    max_steps_per_epoch: cap on optimizer steps per epoch (0 = no cap).
    max_eval_batches: cap on batches per evaluation (0 = no cap).
    contraction_batches: test batches used for ``empirical_contraction``
      (from the zero state).
    contraction_rows: sequences of each of those batches used.
    contraction_steps: at most this many time steps per sequence.
    contraction_every: record the measured contraction in the per-epoch
      history every this many epochs (and after the first and last; 0 = never).
    checkpoint_seconds: also checkpoint mid-epoch at most this often.
  """

  optimizer: str = "adam"
  lr: float = 1e-3
  momentum: float = 0.0
  clip: float = 0.0
  zero_grad: bool = True
  loss_reduction: str = "mean"
  epochs: int = 10
  batch_size: int = 32
  eval_batch_size: int = 32
  bptt: int = 35
  context: Optional[int] = None
  length_multiple: int = 16
  lr_schedule: str = "none"
  lr_decay: float = 4.0
  lr_step_epochs: int = 10
  lr_decay_after: int = 10
  lr_decay_window: int = 3
  stable: bool = False
  lam: float = 1.0
  input_bound: float = 1.0
  projection: str = "certified"
  eval_ks: tuple = ()
  test_every_epoch: bool = False
  max_steps_per_epoch: int = 0
  max_eval_batches: int = 0
  contraction_batches: int = 1
  contraction_rows: int = 4
  contraction_steps: int = 256
  contraction_every: int = 5
  checkpoint_seconds: float = 300.0

  def __post_init__(self):
    if self.optimizer not in OPTIMIZERS:
      raise ConfigError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, "
                        f"got {self.optimizer!r}")
    if not isinstance(self.zero_grad, bool):
      raise ConfigError(f"train.zero_grad must be true or false, got {self.zero_grad!r}")
    if self.loss_reduction not in ("mean", "sum"):
      raise ConfigError(
          f"train.loss_reduction must be 'mean' or 'sum', got {self.loss_reduction!r}")
    if self.lr_schedule not in LR_SCHEDULES:
      raise ConfigError(f"train.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, "
                        f"got {self.lr_schedule!r}")
    for name in ("epochs", "batch_size", "eval_batch_size", "bptt", "length_multiple",
                 "lr_decay_window"):
      if getattr(self, name) < 1:
        raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
    if not 0 < self.lr < math.inf:
      raise ConfigError(f"train.lr must be a finite number > 0, got {self.lr}")
    # `not x >= 0` rather than `x < 0`: NaN fails too.
    for name in ("clip", "lr_decay_after", "max_steps_per_epoch", "max_eval_batches",
                 "checkpoint_seconds"):
      if not getattr(self, name) >= 0:
        raise ConfigError(f"train.{name} must be >= 0 (0 = none), got {getattr(self, name)}")
    if not 0 <= self.momentum < 1:
      raise ConfigError(f"train.momentum must be in [0, 1), got {self.momentum}")
    if self.momentum and self.optimizer == "adam":
      # optax.adam has no momentum argument (its b1 is the first moment): a
      # value here would be recorded and silently do nothing.
      raise ConfigError(f"train.momentum applies to sgd and rmsprop, not adam "
                        f"(got momentum={self.momentum})")
    for name in ("lr_decay", "input_bound"):
      if not getattr(self, name) > 0:
        raise ConfigError(f"train.{name} must be > 0, got {getattr(self, name)}")
    if self.lr_step_epochs < 1:
      raise ConfigError(f"train.lr_step_epochs must be >= 1, got {self.lr_step_epochs}")
    if self.context is not None and self.context < 1:
      raise ConfigError(f"train.context must be >= 1 (or unset), got {self.context}")
    if not 0 < self.lam <= 1:
      # The projected set's certified bound is lam; above 1 it certifies no
      # contraction, so "stable" would be a misnomer (train.stable=false is the
      # unconstrained model).
      raise ConfigError(f"train.lam must be in (0, 1]: a factor above 1 is not a "
                        f"contraction, got {self.lam}")
    if self.projection not in PROJECTIONS:
      raise ConfigError(f"train.projection must be one of {', '.join(PROJECTIONS)}, "
                        f"got {self.projection!r}")
    if self.projection == "authors" and self.lam != 1.0:
      raise ConfigError("train.projection='authors' has the authors' fixed constants: "
                        f"it needs train.lam=1, got {self.lam}")
    if any((not isinstance(k, int)) or k < 1 for k in self.eval_ks):
      raise ConfigError(f"train.eval_ks must be positive integers, got {self.eval_ks}")


#: Appended to a ``cost_gpu`` that is a guess: no run of that experiment has
#: been timed on a GPU, and ``seqbench list`` should not read as if one had.
GPU_COST_UNMEASURED = " (estimate, not measured on a GPU)"


@dataclasses.dataclass(frozen=True)
class Experiment:
  """One named run configuration (one published row, or one grid point).

  Attributes:
    name: registry name (``seqbench train NAME``).
    title: one line: paper, table, row.
    task: task name (``seqbench.tasks``).
    model: the architecture.
    train: the training settings.
    task_options: task options as sorted ``(key, value)`` pairs.
    published: the published number (None where there is none).
    published_note: where it comes from and how sure we are.
    cost_cpu: expected wall time of the full run on the 2-core dev CPU.
    cost_gpu: expected wall time on one H100.
    group: ``mh-table1``, ``tcn-table1``, ``trunc-eval``, ``trunc-train``,
      ``lam-sweep``.
    notes: settings that deviate from or reconstruct the paper.
  """

  name: str
  title: str
  task: str
  model: ModelConfig
  train: TrainConfig
  task_options: tuple = ()
  published: Optional[float] = None
  published_note: str = ""
  cost_cpu: str = ""
  cost_gpu: str = ""
  group: str = ""
  notes: str = ""

  @property
  def command(self) -> str:
    return f"seqbench train {self.name}"

  @property
  def doc(self) -> str:
    """The config's documentation: command, expected cost, published number."""
    pub = "none" if self.published is None else f"{self.published:g}"
    lines = [self.title, "",
             f"Command:   {self.command} [--seed N] [--out DIR]   (--smoke: < 1 min on CPU)",
             f"Cost:      CPU {self.cost_cpu or '?'}; GPU (H100) {self.cost_gpu or '?'}",
             f"Published: {pub}" + (f" ({self.published_note})" if self.published_note else "")]
    if self.notes:
      lines += ["", self.notes]
    return "\n".join(lines)

  def options(self) -> dict:
    return dict(self.task_options)

  def resolved_dict(self) -> dict:
    """The whole configuration as JSON-friendly data (goes into result rows)."""
    return {
        "task": self.task,
        "task_options": {k: v for k, v in self.task_options},
        "model": dataclasses.asdict(self.model),
        "train": {**dataclasses.asdict(self.train), "eval_ks": list(self.train.eval_ks)},
    }

  def summary(self) -> dict:
    """What ``seqbench list --json`` prints for this experiment."""
    t = self.train
    return {
        "name": self.name,
        "title": self.title,
        "group": self.group,
        "task": self.task,
        "model": self.model.backbone,
        "executor": self.model.executor_name,
        "k": self.model.k if self.model.executor == "truncated" else None,
        "stable": t.stable,
        "lam": t.lam if t.stable else None,
        "published": self.published,
        "published_note": self.published_note,
        "expected_cost": {"cpu": self.cost_cpu, "gpu": self.cost_gpu},
        "command": self.command,
    }


def options_tuple(options: Mapping[str, Any]) -> tuple:
  return tuple(sorted(options.items()))


# ---------------------------------------------------------------------------
# Overrides.

_SECTIONS = ("model", "train", "task")


def _field_types(cls) -> dict:
  hints = typing.get_type_hints(cls)
  return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _parse_value(key: str, kind: Any, value: Any) -> Any:
  """Parse/validate ``value`` for a field of type ``kind``."""
  origin = typing.get_origin(kind)
  args = typing.get_args(kind)
  optional = origin is typing.Union and type(None) in args
  if optional:
    inner = [a for a in args if a is not type(None)][0]
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
      return None
    return _parse_value(key, inner, value)
  if kind is tuple or origin is tuple:
    if isinstance(value, str):
      parts = [p for p in value.replace(" ", "").split(",") if p]
      try:
        return tuple(int(p) for p in parts)
      except ValueError:
        raise ConfigError(
            f"--set {key}: expected comma-separated integers, got {value!r}") from None
    if isinstance(value, (list, tuple)):
      return tuple(value)
    raise ConfigError(f"--set {key}: expected a list, got {value!r}")
  if kind is bool:
    if isinstance(value, bool):
      return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0",
                                                            "false", "no", "off"):
      return value.strip().lower() in ("1", "true", "yes", "on")
    raise ConfigError(f"--set {key}: expected true or false, got {value!r}")
  if kind in (int, float, str):
    if isinstance(value, bool) and kind is not str:
      raise ConfigError(f"--set {key}: expected {kind.__name__}, got {value!r}")
    try:
      if kind is int and isinstance(value, float) and not value.is_integer():
        raise ValueError
      if kind is int and isinstance(value, str):
        return int(value.strip())
      return kind(value)
    except (TypeError, ValueError):
      raise ConfigError(f"--set {key}: expected {kind.__name__}, got {value!r}") from None
  raise ConfigError(f"--set {key}: cannot set a field of type {kind}")


def _resolve_key(key: str, task_option_names) -> tuple[str, str]:
  model_fields = _field_types(ModelConfig)
  train_fields = _field_types(TrainConfig)
  if "." in key:
    section, name = key.split(".", 1)
    if section not in _SECTIONS:
      raise ConfigError(f"--set {key}: unknown section {section!r}; use model., train. or task.")
    known = {"model": model_fields, "train": train_fields,
             "task": dict.fromkeys(task_option_names)}[section]
    if name not in known:
      close = difflib.get_close_matches(name, list(known), n=1)
      hint = f"; did you mean {section}.{close[0]}?" if close else ""
      raise ConfigError(f"--set {key}: unknown key{hint}")
    return section, name
  owners = [s for s, fields in (("model", model_fields), ("train", train_fields),
                                ("task", dict.fromkeys(task_option_names))) if key in fields]
  if not owners:
    everything = list(model_fields) + list(train_fields) + list(task_option_names)
    close = difflib.get_close_matches(key, everything, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise ConfigError(f"--set {key}: unknown key{hint} (keys: model.*, train.*, task.*)")
  if len(owners) > 1:
    raise ConfigError(f"--set {key}: ambiguous; write {' or '.join(o + '.' + key for o in owners)}")
  return owners[0], key


def _task_default(task_cls, name: str) -> Any:
  """The default of a task option, or a sentinel equal to nothing when it has none."""
  for f in dataclasses.fields(task_cls):
    if f.name == name:
      if f.default is not dataclasses.MISSING:
        return f.default
      if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
  return object()


def apply_overrides(exp: Experiment, overrides: Mapping[str, Any]) -> Experiment:
  """A copy of ``exp`` with ``overrides`` applied (validated against the fields).

  Raises:
    ConfigError: unknown key, wrong type, or an invalid resulting config.
  """
  if not overrides:
    return exp
  from seqbench.tasks import registry  # pylint: disable=import-outside-toplevel
  from seqbench.tasks.storage import DataError  # pylint: disable=import-outside-toplevel
  task_cls = registry.task_class(exp.task)
  model_kw, train_kw, task_kw = {}, {}, dict(exp.task_options)
  model_types, train_types = _field_types(ModelConfig), _field_types(TrainConfig)
  for key, value in overrides.items():
    section, name = _resolve_key(str(key), task_cls.option_names())
    if section == "model":
      model_kw[name] = _parse_value(key, model_types[name], value)
    elif section == "train":
      train_kw[name] = _parse_value(key, train_types[name], value)
    else:
      if isinstance(value, str):
        try:
          value = task_cls.parse_option(name, value)
        except DataError as e:
          raise ConfigError(f"--set {key}: {e}") from None
      if name not in exp.options() and value == _task_default(task_cls, name):
        # Task options are hashed as the registry sets them, not with every
        # default filled in: setting one to its default must leave the run
        # (and its id) as it is.
        continue
      task_kw[name] = value
  try:
    model = dataclasses.replace(exp.model, **model_kw)
    train = dataclasses.replace(exp.train, **train_kw)
  except ConfigError:
    raise
  except (ValueError, TypeError) as e:
    raise ConfigError(f"--set: {e}") from None
  return dataclasses.replace(exp, model=model, train=train, task_options=options_tuple(task_kw))


def parse_set_args(items) -> dict:
  """``["a=1", "b.c=x"]`` -> ``{"a": "1", "b.c": "x"}`` (raises ConfigError)."""
  out = {}
  for item in items or ():
    if "=" not in item or not item.split("=", 1)[0].strip():
      raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
    key, value = item.split("=", 1)
    out[key.strip()] = value
  return out


# ---------------------------------------------------------------------------
# Smoke: any experiment in under a minute on CPU.

#: Task options that shrink generated data sets for ``--smoke``.
_SMOKE_TASK_OPTIONS = {
    "adding": {"n_train": 256, "n_test": 64},
    "copy": {"n_train": 128, "n_test": 32},
}


def smoke(exp: Experiment) -> Experiment:
  """The same experiment (same architecture and optimiser), shrunk to seconds.

  One epoch of at most 3 steps; at most 2 batches of at most 8 sequences (or
  LM rows) per evaluation; LM windows of at most 50 scored tokens and 50 of
  context; smaller generated data sets; at most 3 window lengths in
  ``eval_ks``; the contraction measured on 1 sequence over 4 steps. Widths,
  depths, cells, executors and optimiser are the real ones, so a smoke run
  checks that the full run will start.
  """
  t = exp.train
  train = dataclasses.replace(
      t, epochs=1, max_steps_per_epoch=3, max_eval_batches=2, contraction_batches=1,
      contraction_rows=1, contraction_steps=min(t.contraction_steps, 4),
      batch_size=min(t.batch_size, 8), eval_batch_size=min(t.eval_batch_size, 8),
      bptt=min(t.bptt, 50), context=None if t.context is None else min(t.context, 50),
      eval_ks=tuple(t.eval_ks[:3]))
  opts = dict(exp.task_options)
  opts.update(_SMOKE_TASK_OPTIONS.get(exp.task, {}))
  return dataclasses.replace(exp, train=train, task_options=options_tuple(opts))




def to_json(exp: Experiment) -> str:
  return json.dumps(exp.resolved_dict(), sort_keys=True, default=str)
