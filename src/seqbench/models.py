r"""Sequence models: input layer -> backbone -> head.

A :class:`Model` is built from a frozen :class:`ModelConfig` and is itself a
frozen (hashable) dataclass, so it can be a static argument of ``jax.jit``::

    model = Model(ModelConfig(backbone="lstm", input_kind="embed", input_size=33278,
                              embed_size=200, hidden_size=200, layers=2,
                              output_size=33278, dropout=0.2))
    params = model.init(key)
    logits, carry = model.apply(params, ids, carry, key=key, train=True)

The three stages:

* **input layer** (``input_kind``): ``"embed"`` (token ids -> a table of
  ``embed_size``; pytorch/examples ``word_language_model`` init
  ``U(-0.1, 0.1)``), ``"linear"`` (features -> ``embed_size``, PyTorch
  ``nn.Linear`` init; the authors' JSB model uses Linear 88 -> 88),
  ``"identity"`` (features as they are), ``"scalar"`` (integer symbols fed as
  one float channel, as the TCN copy-memory code does) or ``"onehot"``.
  ``input_clip`` clips the result elementwise to ``[-1, 1]`` (Miller & Hardt
  clip word embeddings so that a stable LSTM's inputs obey
  :math:`\|x\|_\infty \le 1`, the ``input_bound`` its certificate assumes).
* **backbone**: a stack of ``layers`` recurrent cells (``"rnn"`` = tanh,
  ``"rnn_relu"``, ``"lstm"``, ``"gru"``, ``"lru"``) run by an executor --
  ``"scan"`` (the recurrent model), ``"truncated"`` with window ``k`` (the
  feed-forward model of Miller & Hardt, Sec. 3) or ``"parallel"`` (linear
  cells) -- or a convolutional net (``"tcn"``, ``"wavenet"``).
* **head**: a Linear map to ``output_size`` (vocabulary, 88 keys, 10 classes,
  or 1 regression output), on every step (``readout="all"``) or on the last
  step only (``readout="last"``: pixel MNIST, adding). ``tie_weights`` uses
  the embedding table as the head (TCN word-level PTB).

Dropout (``train=True`` with a ``key``): on the input layer's output
(``embed_dropout``, default ``dropout``) and on the output of every recurrent
layer (so between layers and before the head), as pytorch/examples' word LM
(``nn.LSTM(dropout=p)`` plus ``self.drop`` on embeddings and outputs). Conv
nets apply ``dropout`` inside their blocks (TCN).

Truncation in a stack: with ``executor="truncated"`` the stack is one
recurrent model (:class:`seqbench.cells.Stacked`, the joint state of all
layers) and its k-truncated model restarts every layer from the zero state k
steps back, so it sees exactly the last k inputs, as Miller & Hardt define it
(Sec. 3). Dropout between the layers of a truncated stack is not implemented
(every window would need its own masks): training one with ``dropout > 0``
raises.

Carry (truncated BPTT): for ``executor="scan"`` or ``"parallel"`` ``apply``
takes and returns the list of per-layer carries, so a language model passes
one window's final state into the next. The truncated model and conv nets
start every window from scratch: they return ``None``.

:meth:`Model.cells_tree` is the prefix tree for
:func:`seqbench.stability.project_tree`: every recurrent layer is projected.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp

from seqbench import cells as cells_lib
from seqbench import convnets
from seqbench import unroll

Array = jax.Array
Params = Any
Carry = Any

#: Recurrent backbones: name -> cell factory ``(hidden_size, config) -> cell``.
CELLS: Mapping[str, Any] = {
    "rnn": lambda h, c: cells_lib.RNN(h, "tanh", dtype=c.jnp_dtype),
    "rnn_relu": lambda h, c: cells_lib.RNN(h, "relu", dtype=c.jnp_dtype),
    "lstm": lambda h, c: cells_lib.LSTM(h, forget_bias=c.forget_bias, dtype=c.jnp_dtype),
    "gru": lambda h, c: cells_lib.GRU(h, dtype=c.jnp_dtype),
    "lru": lambda h, c: cells_lib.LRU(h, dtype=c.jnp_dtype),
}

#: Convolutional backbones: name -> factory ``config -> net``.
CONVNETS: Mapping[str, Any] = {
    "tcn": lambda c: convnets.TCN(c.hidden_size, c.levels, c.kernel_size, dropout=c.dropout,
                                  conv_impl=c.conv_impl, output_size=c.output_channels),
    "wavenet": lambda c: convnets.WaveNet(c.hidden_size, c.levels, c.kernel_size,
                                          stacks=c.stacks, conv_impl=c.conv_impl),
}

EXECUTORS = ("scan", "truncated", "parallel")
INPUT_KINDS = ("embed", "linear", "identity", "scalar", "onehot")
READOUTS = ("all", "last")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float64": jnp.float64}

#: ``init_scheme``: ``"pytorch"`` (PyTorch's defaults; the head of an
#: ``embed`` model U(-0.1, 0.1) with zero bias, as pytorch/examples' word LM);
#: ``"mh_poly_music"`` (``init_weights`` of Miller & Hardt's ``TCN/poly_music``
#: fork: the head U(-0.1, 0.1) with zero bias, and the second quarter of each of
#: PyTorch's two recurrent bias vectors filled with 10, which is +20 on
#: ``bias[n/4:n/2]`` here -- the forget gate of an LSTM; a quarter of a tanh-RNN's
#: units, which then sit saturated at 1);
#: ``"tcn_normal_head"`` (``init_weights`` of locuslab/TCN's ``adding_problem``,
#: ``copy_memory`` and ``word_cnn`` models: head weights N(0, 0.01^2); with an
#: ``embed`` input the embedding too and a zero head bias, as ``word_cnn``,
#: whose tied decoder shares the table. Its ``mnist_pixel``, ``poly_music``
#: and ``char_cnn`` models keep the ``"pytorch"`` scheme's draws).
INIT_SCHEMES = ("pytorch", "mh_poly_music", "tcn_normal_head")
#: Standard deviation of the ``tcn_normal_head`` draws.
_TCN_HEAD_STD = 0.01
#: What ``mh_poly_music`` puts in each PyTorch bias vector's second quarter.
_MH_POLY_MUSIC_BIAS = 10.0


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Everything that defines a model's architecture (see the module docstring).

  Attributes:
    backbone: one of :data:`CELLS` or :data:`CONVNETS`.
    input_kind: one of :data:`INPUT_KINDS`.
    input_size: vocabulary size (``embed``/``onehot``/``scalar``: number of
      symbols) or feature width (``linear``/``identity``). 0 = take it from
      the task.
    output_size: head width. 0 = take it from the task.
    hidden_size: width of every recurrent layer / conv channel count.
    layers: number of stacked recurrent layers (ignored by conv nets).
    embed_size: width of the ``embed``/``linear`` input layer (0 = hidden_size).
    input_clip: clip the input layer's output to ``[-1, 1]``.
    executor: ``scan``, ``truncated`` or ``parallel`` (recurrent backbones).
    k: the truncated model's window (``executor="truncated"``).
    readout: ``all`` (per-step outputs) or ``last`` (last step only).
    dropout: between/after recurrent layers; inside TCN blocks.
    embed_dropout: on the input layer's output (None = ``dropout``).
    forget_bias: LSTM forget-gate bias added at init.
    init_scheme: one of :data:`INIT_SCHEMES`.
    tie_weights: use the embedding table as the head (needs ``embed_size``
      equal to the backbone's output width, :attr:`backbone_width`).
    levels, kernel_size, stacks, conv_impl: conv-net shape (TCN, WaveNet).
    output_channels: TCN only: channels of the last block (0 = hidden_size).
      The TCN repository's character model ends in its embedding's width and
      ties the decoder to the embedding.
    dtype: parameter dtype name.
  """

  backbone: str = "lstm"
  input_kind: str = "identity"
  input_size: int = 0
  output_size: int = 0
  hidden_size: int = 128
  layers: int = 1
  embed_size: int = 0
  input_clip: bool = False
  executor: str = "scan"
  k: int = 0
  readout: str = "all"
  dropout: float = 0.0
  embed_dropout: Optional[float] = None
  forget_bias: float = 0.0
  tie_weights: bool = False
  levels: int = 4
  kernel_size: int = 2
  stacks: int = 1
  conv_impl: str = convnets.DEFAULT_CONV_IMPL
  dtype: str = "float32"
  init_scheme: str = "pytorch"
  output_channels: int = 0

  def __post_init__(self):
    if self.backbone not in CELLS and self.backbone not in CONVNETS:
      raise ValueError(f"unknown backbone {self.backbone!r}; choose from "
                       f"{', '.join(list(CELLS) + list(CONVNETS))}")
    if self.input_kind not in INPUT_KINDS:
      raise ValueError(f"unknown input_kind {self.input_kind!r}; choose from {INPUT_KINDS}")
    if self.executor not in EXECUTORS:
      raise ValueError(f"unknown executor {self.executor!r}; choose from {EXECUTORS}")
    if self.readout not in READOUTS:
      raise ValueError(f"unknown readout {self.readout!r}; choose from {READOUTS}")
    if self.dtype not in DTYPES:
      raise ValueError(f"unknown dtype {self.dtype!r}; choose from {list(DTYPES)}")
    if self.init_scheme not in INIT_SCHEMES:
      raise ValueError(f"unknown init_scheme {self.init_scheme!r}; choose from {INIT_SCHEMES}")
    if self.init_scheme == "mh_poly_music" and self.backbone not in ("rnn", "rnn_relu", "lstm"):
      raise ValueError("init_scheme='mh_poly_music' is defined for the RNN and LSTM "
                       f"(one bias vector), not {self.backbone!r}")
    if self.executor == "truncated" and self.is_recurrent and self.k < 1:
      raise ValueError("executor='truncated' needs a window k >= 1")
    for name in ("hidden_size", "layers"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.output_channels < 0:
      raise ValueError(f"output_channels must be >= 0 (0 = hidden_size), got {self.output_channels}")
    if self.output_channels and self.backbone != "tcn":
      raise ValueError(f"output_channels is a TCN setting; backbone {self.backbone!r} has none")
    if self.tie_weights and (self.input_kind != "embed" or self.input_width != self.backbone_width):
      raise ValueError("tie_weights needs input_kind='embed' and embed_size equal to the "
                       f"backbone's output width ({self.backbone_width})")
    for name in ("dropout", "embed_dropout"):
      v = getattr(self, name)
      if v is not None and not 0.0 <= v < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {v}")
    # The backbone's own checks (a TCN's levels, kernel size, conv_impl, ...) run
    # here, when the config is made, not first when a run builds its model:
    # a bad `--set` then fails before anything is written.
    if self.is_recurrent:
      CELLS[self.backbone](self.hidden_size, self)
    else:
      CONVNETS[self.backbone](self)

  @property
  def is_recurrent(self) -> bool:
    return self.backbone in CELLS

  @property
  def jnp_dtype(self):
    return DTYPES[self.dtype]

  @property
  def backbone_width(self) -> int:
    """Width of the backbone's output (what the head sees)."""
    if self.backbone == "tcn":  # the net's own rule for its last block's width
      return CONVNETS["tcn"](self).channels()[-1]
    return self.hidden_size

  @property
  def input_width(self) -> int:
    """Width of the input layer's output (what the backbone sees)."""
    if self.input_kind in ("embed", "linear"):
      return self.embed_size or self.hidden_size
    if self.input_kind == "scalar":
      return 1
    return self.input_size

  @property
  def carries_state(self) -> bool:
    """Whether ``apply`` returns a carry to feed into the next window."""
    return self.is_recurrent and self.executor in ("scan", "parallel")

  @property
  def executor_name(self) -> str:
    return self.executor if self.is_recurrent else "conv"


def _linear_init(key, d_in: int, d_out: int, dtype, bound: Optional[float] = None,
                 zero_bias: bool = False, normal_std: Optional[float] = None) -> dict:
  """PyTorch ``nn.Linear`` init ``U(-1/sqrt(d_in), 1/sqrt(d_in))`` (or ``bound``).

  ``normal_std``: weights ``N(0, normal_std^2)`` instead (the bias keeps its draw).
  """
  kw, kb = jax.random.split(key)
  bw = 1.0 / math.sqrt(d_in) if bound is None else bound
  if normal_std is None:
    w = jax.random.uniform(kw, (d_in, d_out), dtype, -bw, bw)
  else:
    w = normal_std * jax.random.normal(kw, (d_in, d_out), dtype)
  if zero_bias:
    b = jnp.zeros((d_out,), dtype)
  else:
    b = jax.random.uniform(kb, (d_out,), dtype, -1.0 / math.sqrt(d_in), 1.0 / math.sqrt(d_in))
  return {"w": w, "b": b}


def dropout(key: Optional[Array], x: Array, rate: float, train: bool) -> Array:
  """Inverted dropout; the identity unless ``train`` and ``rate > 0``."""
  if not train or rate <= 0.0:
    return x
  if key is None:
    raise ValueError("dropout in training mode needs a PRNG key: apply(..., key=key)")
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))


@dataclasses.dataclass(frozen=True)
class Model:
  """Input layer -> backbone -> head (see the module docstring)."""

  config: ModelConfig

  def __post_init__(self):
    c = self.config
    if c.input_size < 1:
      raise ValueError("ModelConfig.input_size is unset (0): resolve it from the task first")
    if c.output_size < 1:
      raise ValueError("ModelConfig.output_size is unset (0): resolve it from the task first")
    if c.tie_weights and c.output_size != c.input_size:
      raise ValueError("tie_weights needs output_size == input_size (the embedding table is "
                       f"the head), got {c.input_size} -> {c.output_size}")
    if c.executor == "parallel" and c.is_recurrent and not CELLS[c.backbone](1, c).is_linear:
      raise ValueError(f"executor='parallel' needs a linear cell (lru), not {c.backbone!r}")

  # ----------------------------------------------------------------- pieces

  @property
  def cells(self) -> tuple:
    """The recurrent cells, one per layer (empty for conv nets)."""
    c = self.config
    if not c.is_recurrent:
      return ()
    return tuple(CELLS[c.backbone](c.hidden_size, c) for _ in range(c.layers))

  @property
  def convnet(self):
    c = self.config
    return None if c.is_recurrent else CONVNETS[c.backbone](c)

  def cells_tree(self) -> dict:
    """Prefix tree of cells for :func:`seqbench.stability.project_tree`.

    ``{"input": None, "backbone": [cell, ...], "head": None}``: every
    recurrent layer is listed (a conv net gives ``"backbone": None``).
    """
    backbone = list(self.cells) if self.config.is_recurrent else None
    return {"input": None, "backbone": backbone, "head": None}

  def layer_inputs_bound(self) -> float:
    """``||x||_inf`` bound of every layer's inputs used by the certificate (1)."""
    return 1.0

  # ------------------------------------------------------------------- init

  def init(self, key: Array) -> Params:
    """Parameters ``{"input", "backbone", "head"}`` (plain pytree)."""
    c = self.config
    dt = c.jnp_dtype
    k_in, k_bb, k_head = jax.random.split(key, 3)
    normal_head = c.init_scheme == "tcn_normal_head"
    if c.input_kind == "embed" and normal_head:
      inp = {"embedding": _TCN_HEAD_STD * jax.random.normal(
          k_in, (c.input_size, c.input_width), dt)}
    elif c.input_kind == "embed":
      inp = {"embedding": jax.random.uniform(k_in, (c.input_size, c.input_width), dt, -0.1, 0.1)}
    elif c.input_kind == "linear":
      inp = _linear_init(k_in, c.input_size, c.input_width, dt)
    else:
      inp = {}
    width = c.input_width
    if c.is_recurrent:
      keys = jax.random.split(k_bb, c.layers)
      backbone = []
      for cell, k in zip(self.cells, keys):
        p = cell.init(k, width)
        if c.init_scheme == "mh_poly_music":
          n = p["bias"].shape[-1]
          p = {**p, "bias": p["bias"].at[n // 4:n // 2].set(2 * _MH_POLY_MUSIC_BIAS)}
        backbone.append(p)
        width = cell.hidden_size
    else:
      backbone = self.convnet.init(k_bb, width, dt)
      width = c.backbone_width
    if c.tie_weights:
      head = {"b": jnp.zeros((c.output_size,), dt)}
    elif normal_head:
      head = _linear_init(k_head, width, c.output_size, dt, zero_bias=c.input_kind == "embed",
                          normal_std=_TCN_HEAD_STD)
    elif c.input_kind == "embed" or c.init_scheme == "mh_poly_music":
      # pytorch/examples word LM and the authors' poly_music: decoder U(-0.1, 0.1), zero bias.
      head = _linear_init(k_head, width, c.output_size, dt, bound=0.1, zero_bias=True)
    else:
      head = _linear_init(k_head, width, c.output_size, dt)
    return {"input": inp, "backbone": backbone, "head": head}

  def initial_carry(self, batch_shape=()) -> Carry:
    """The zero carry of every layer (``None`` when no state is carried)."""
    if not self.config.carries_state:
      return None
    return [cell.initial_state(tuple(batch_shape)) for cell in self.cells]

  # ------------------------------------------------------------------ apply

  def embed(self, params: Params, inputs: Array) -> Array:
    """The input layer: ``(..., T[, D])`` -> ``(..., T, input_width)``."""
    c = self.config
    dt = c.jnp_dtype
    if c.input_kind == "embed":
      x = jnp.take(params["input"]["embedding"], inputs.astype(jnp.int32), axis=0)
    elif c.input_kind == "onehot":
      x = jax.nn.one_hot(inputs, c.input_size, dtype=dt)
    elif c.input_kind == "scalar":
      x = inputs.astype(dt)[..., None]
    elif c.input_kind == "linear":
      x = inputs.astype(dt) @ params["input"]["w"] + params["input"]["b"]
    else:
      x = inputs.astype(dt)
    if c.input_clip:
      x = jnp.clip(x, -1.0, 1.0)
    return x

  def run_layer(self, index: int, params: Params, xs: Array, carry: Carry = None):
    """One recurrent layer with the configured executor: ``(ys, new_carry)``."""
    c = self.config
    cell = self.cells[index]
    if c.executor == "truncated":
      return unroll.truncated(cell, params, xs, c.k), None
    run = unroll.scan if c.executor == "scan" else unroll.parallel
    return run(cell, params, xs, initial_carry=carry, return_carry=True)

  def features(self, params: Params, inputs: Array, carry: Carry = None, *,
               key: Optional[Array] = None, train: bool = False,
               return_layers: bool = False):
    """Backbone outputs ``(..., T, hidden)`` before the head, and the new carry.

    With ``return_layers`` also the list of every recurrent layer's input
    (what :func:`seqbench.stability.empirical_contraction` needs).
    """
    c = self.config
    if train and key is None and (c.dropout > 0 or (c.embed_dropout or 0) > 0):
      raise ValueError("Model.apply(train=True) with dropout needs a PRNG key")
    keys = list(jax.random.split(key, c.layers + 2)) if key is not None else [None] * (c.layers + 2)
    x = self.embed(params, inputs)
    emb_rate = c.dropout if c.embed_dropout is None else c.embed_dropout
    x = dropout(keys[0], x, emb_rate, train)
    layer_inputs = []
    if c.is_recurrent and c.executor == "truncated" and c.layers > 1:
      if train and c.dropout > 0:
        raise ValueError("a truncated stack of layers has no dropout between them: "
                         "set dropout=0 (or layers=1) to train it truncated")
      if return_layers:
        # Inside a truncated stack every window feeds its upper layers its own
        # inputs; the layers' input sequences are those of the recurrent model.
        _, _, layer_inputs = self.with_executor("scan").features(params, inputs,
                                                                 return_layers=True)
      x = unroll.truncated(cells_lib.Stacked(self.cells), params["backbone"], x, c.k)
      new_carry = None
    elif c.is_recurrent:
      if carry is None:
        carry = self.initial_carry(x.shape[:-2])
      new_carry = [] if c.carries_state else None
      for i in range(c.layers):
        layer_inputs.append(x)
        x, ci = self.run_layer(i, params["backbone"][i], x,
                               None if carry is None else carry[i])
        if new_carry is not None:
          new_carry.append(ci)
        x = dropout(keys[i + 1], x, c.dropout, train)
    else:
      # Without dropout training is deterministic, and needs no key (as for the cells).
      x = self.convnet.apply(params["backbone"], x, key=keys[1],
                             deterministic=not train or c.dropout == 0)
      new_carry = None
    if return_layers:
      return x, new_carry, layer_inputs
    return x, new_carry

  def head(self, params: Params, x: Array) -> Array:
    c = self.config
    if c.readout == "last":
      x = x[..., -1, :]
    if c.tie_weights:
      return x @ params["input"]["embedding"].T + params["head"]["b"]
    return x @ params["head"]["w"] + params["head"]["b"]

  def apply(self, params: Params, inputs: Array, carry: Carry = None, *,
            key: Optional[Array] = None, train: bool = False):
    """Run the model: ``(outputs, carry)``.

    Args:
      params: from :meth:`init`.
      inputs: ``(B, T)`` ids (``embed``/``scalar``/``onehot``) or ``(B, T, D)``.
      carry: per-layer carries from the previous window (None = zero state).
      key: PRNG key for dropout (needed when ``train`` and dropout > 0).
      train: apply dropout.

    Returns:
      ``outputs`` ``(B, T, output_size)`` (``readout="all"``) or
      ``(B, output_size)`` (``"last"``), and the new carry (``None`` for the
      truncated executor and conv nets).
    """
    x, new_carry = self.features(params, inputs, carry, key=key, train=train)
    return self.head(params, x), new_carry

  def with_executor(self, executor: str, k: int = 0) -> "Model":
    """The same architecture (same params) run by another executor."""
    return Model(dataclasses.replace(self.config, executor=executor, k=k))

  def num_params(self, params: Params) -> int:
    return int(sum(a.size for a in jax.tree_util.tree_leaves(params)))


__all__ = ["ModelConfig", "Model", "CELLS", "CONVNETS", "EXECUTORS", "INPUT_KINDS", "INIT_SCHEMES",
           "READOUTS", "dropout"]
