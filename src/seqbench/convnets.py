"""Dilated causal convolutional sequence models: TCN and WaveNet.

Both nets map a sequence ``xs`` of shape ``(..., T, D)`` (channels last, any
leading batch dims) to ``(..., T, hidden_size)`` such that output ``y_t``
depends only on inputs ``x_s`` with ``s <= t`` (causality) and only on the
last ``receptive_field`` of them.

The building block is the causal dilated convolution with kernel size ``K``
and dilation ``d``::

    y_t = b + sum_{k=0}^{K-1} W_k^T x_{t - (K-1-k) d},     x_s = 0 for s < 0,

i.e. tap ``k`` looks ``(K-1-k) d`` steps into the past (``W`` has shape
``(K, D_in, D_out)``; the last tap sees the present). This is exactly what
PyTorch's ``Conv1d(padding=(K-1)d)`` followed by removing the last ``(K-1)d``
outputs ("chomp") computes, and what ``lax.conv_general_dilated`` computes with
left padding ``(K-1)d`` and ``rhs_dilation=d``.

How the convolution is computed matters a lot for speed (and nothing for the
numbers), so it is selectable with the ``conv_impl`` field of each net; see
:func:`causal_conv` and :data:`CONV_IMPLS`.

References:
    Bai, Kolter & Koltun (2018), "An Empirical Evaluation of Generic
    Convolutional and Recurrent Networks for Sequence Modeling", arXiv:1803.01271.
    van den Oord et al. (2016), "WaveNet: A Generative Model for Raw Audio",
    arXiv:1609.03499.
    Paine et al. (2016), "Fast Wavenet Generation Algorithm", arXiv:1611.09482
    (the cached, one-step-at-a-time inference used by ``stream_step``).
    Salimans & Kingma (2016), "Weight Normalization", arXiv:1602.07868.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "CONV_IMPLS",
    "DEFAULT_CONV_IMPL",
    "resolve_conv_impl",
    "TCN",
    "WaveNet",
    "causal_conv",
]

Params = Any  # nested dicts / lists of jnp arrays

#: Ways of computing :func:`causal_conv`. All give the same numbers (up to
#: floating point summation order):
#:
#: * ``"shifted_matmul"``: ``sum_k shift_k(x) @ W_k`` -- K matmuls over
#:   time-shifted, channels-last copies of the input.
#: * ``"im2col"``: concatenate the K shifted copies along channels and do one
#:   matmul with the ``(K*D_in, D_out)`` reshaped kernel.
#: * ``"shifted_output"``: one matmul ``x @ [W_0 | ... | W_{K-1}]`` producing
#:   ``(T, K, D_out)``, then shift each tap's slice in time and add. The shifts
#:   and adds are elementwise and fuse into a single kernel, and no shifted copy
#:   of the input is ever materialised.
#: * ``"lax_conv"``: ``lax.conv_general_dilated`` with ``rhs_dilation`` in
#:   channels-last (``NWC``/``WIO``/``NWC``) layout.
#: * ``"lax_conv_ncw"``: the same convolution in channels-first ``NCW`` layout
#:   (transposing in and out), the layout a direct port of PyTorch code uses.
#:   Kept as the slow reference for benchmarks.
CONV_IMPLS = ("shifted_matmul", "im2col", "shifted_output", "lax_conv", "lax_conv_ncw")

#: Default ``conv_impl``: ``"auto"``, which is :data:`ACCELERATOR_CONV_IMPL`
#: on GPU/TPU and :data:`CPU_CONV_IMPL` on the CPU. ``"im2col"`` was chosen by
#: measurement
#: (``benchmarks/tcn_forms.py``; B=64, T=256, D=256, 8 levels, kernel 3, 512
#: channels, float32 with XLA's default TF32 matmuls, NVIDIA H200, jax 0.11.2,
#: median of 20 calls):
#:
#: ==================  ===========  ========  =========
#: form                fwd+bwd ms   fwd ms    compile s
#: ==================  ===========  ========  =========
#: im2col              8.77         2.48      3.6
#: shifted_output      8.48         2.74      7.4
#: shifted_matmul      9.36         3.56      8.4
#: lax_conv (NWC)      717          459       54
#: lax_conv_ncw        506          459       0.9
#: PyTorch Conv1d      15.2         5.05      --
#: ==================  ===========  ========  =========
#:
#: The matmul forms turn each conv into dense GEMMs over a ``(batch*T,
#: channels)`` matrix, which XLA hands straight to cuBLAS and fuses the
#: pads/slices/concats around; dilated ``conv_general_dilated`` instead goes to
#: a cuDNN convolution that is ~50-90x slower here in either layout (and the
#: channels-last one took 54 s to compile). ``im2col`` was fastest forward,
#: within 4% of the best fwd+bwd (``shifted_output``, which is ~2x slower than
#: ``im2col`` on CPU), compiled fastest of the matmul forms, and is one GEMM
#: with a ``K*D_in`` contraction, the shape GEMM libraries like best. In
#: bfloat16 the three matmul forms were within 3% of each other fwd+bwd
#: (4.6 ms) and ``im2col`` again fastest forward (1.4 ms). On a 2-core CPU
#: (``benchmarks/results/cpu``) ``lax_conv`` was fastest (oneDNN convolutions)
#: and ``im2col`` close to ``shifted_matmul`` (fwd 89 vs 162 ms at B=32,
#: T=128, 256 channels), hence the CPU choice.
ACCELERATOR_CONV_IMPL = "im2col"
CPU_CONV_IMPL = "lax_conv"
DEFAULT_CONV_IMPL = "auto"


def resolve_conv_impl(impl: str) -> str:
    """The concrete form behind ``impl`` (``"auto"`` picks by JAX's default backend)."""
    if impl == "auto":
        return CPU_CONV_IMPL if jax.default_backend() == "cpu" else ACCELERATOR_CONV_IMPL
    return impl


# ---------------------------------------------------------------------------
# The causal dilated convolution
# ---------------------------------------------------------------------------


def _pad_time(x: jax.Array, left: int) -> jax.Array:
    """Zero-pads ``left`` steps at the start of the time axis (axis -2)."""
    if left == 0:
        return x
    widths = [(0, 0)] * (x.ndim - 2) + [(left, 0), (0, 0)]
    return jnp.pad(x, widths)


def causal_conv(
    x: jax.Array,
    w: jax.Array,
    b: jax.Array | None,
    dilation: int,
    impl: str = DEFAULT_CONV_IMPL,
) -> jax.Array:
    r"""Causal dilated 1-D convolution over the time axis, channels last.

    .. math::

        y_t = b + \sum_{k=0}^{K-1} W_k^\top x_{t-(K-1-k)d},
        \qquad x_s = 0 \text{ for } s < 0.

    Args:
        x: input, shape ``(..., T, D_in)``; leading dims are batch dims.
        w: kernel, shape ``(K, D_in, D_out)``; ``w[K-1]`` multiplies the
            present input, ``w[k]`` the input ``(K-1-k)*dilation`` steps back.
        b: bias, shape ``(D_out,)``, or ``None``.
        dilation: spacing ``d >= 1`` between taps.
        impl: one of :data:`CONV_IMPLS`, or ``"auto"`` (how to compute it; same
            numbers).

    Returns:
        ``y`` of shape ``(..., T, D_out)``.
    """
    if x.ndim < 2:
        raise ValueError(f"causal_conv expects x of shape (..., T, D), got {x.shape}")
    impl = resolve_conv_impl(impl)
    k_size, d_in, d_out = w.shape
    if x.shape[-1] != d_in:
        raise ValueError(f"causal_conv expects input size {d_in}, got {x.shape[-1]}")
    if dilation < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}")
    t_len = x.shape[-2]
    d = int(dilation)
    if t_len == 0:  # empty sequence: nothing to convolve (and no taps to keep)
        return jnp.zeros(x.shape[:-1] + (d_out,), jnp.result_type(x, w))

    if impl in ("lax_conv", "lax_conv_ncw"):
        y = _lax_causal_conv(x, w, d, channels_last=(impl == "lax_conv"))
    else:
        # Taps whose look-back (K-1-k)*d reaches past the start of the
        # sequence only ever see the zero padding: drop them statically. This
        # matters for short sequences with large dilations (and is free).
        taps = [k for k in range(k_size) if (k_size - 1 - k) * d < t_len]
        lags = [(k_size - 1 - k) * d for k in taps]
        pad = max(lags)
        if impl == "shifted_matmul":
            # The present tap needs no shift (and no copy of x).
            y = x @ w[k_size - 1]
            if pad:
                xp = _pad_time(x, pad)
                for k, lag in zip(taps, lags):
                    if lag:
                        y = y + xp[..., pad - lag : pad - lag + t_len, :] @ w[k]
        elif impl == "im2col":
            if pad:
                xp = _pad_time(x, pad)
                cols = jnp.concatenate(
                    [xp[..., pad - lag : pad - lag + t_len, :] for lag in lags], axis=-1
                )
            else:
                cols = x
            y = cols @ w[np.asarray(taps)].reshape(len(taps) * d_in, d_out)
        elif impl == "shifted_output":
            # (D_in, n_taps * D_out): one GEMM computes every tap's product.
            w_all = jnp.transpose(w[np.asarray(taps)], (1, 0, 2)).reshape(
                d_in, len(taps) * d_out
            )
            z = (x @ w_all).reshape(*x.shape[:-1], len(taps), d_out)
            zp = _pad_time(z.reshape(*x.shape[:-1], len(taps) * d_out), pad)
            zp = zp.reshape(*zp.shape[:-1], len(taps), d_out)
            y = None
            for j, lag in enumerate(lags):
                term = zp[..., pad - lag : pad - lag + t_len, j, :]
                y = term if y is None else y + term
        else:
            raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {impl!r}")
    if b is not None:
        y = y + b
    return y


def _lax_causal_conv(x: jax.Array, w: jax.Array, d: int, channels_last: bool) -> jax.Array:
    """``lax.conv_general_dilated`` form: left pad (K-1)d, rhs_dilation d."""
    k_size = w.shape[0]
    lead = x.shape[:-2]
    xb = x.reshape((math.prod(lead),) + x.shape[-2:])  # (N, T, D_in); N may be 0
    padding = [((k_size - 1) * d, 0)]
    if channels_last:
        y = lax.conv_general_dilated(
            xb, w, window_strides=(1,), padding=padding, rhs_dilation=(d,),
            dimension_numbers=("NWC", "WIO", "NWC"),
        )
    else:
        y = lax.conv_general_dilated(
            jnp.swapaxes(xb, 1, 2),  # (N, D_in, T)
            jnp.transpose(w, (2, 1, 0)),  # (D_out, D_in, K)
            window_strides=(1,), padding=padding, rhs_dilation=(d,),
            dimension_numbers=("NCH", "OIH", "NCH"),
        )
        y = jnp.swapaxes(y, 1, 2)
    return y.reshape(lead + y.shape[-2:])


def _stream_conv(
    w: jax.Array, b: jax.Array | None, buf: jax.Array | None, x: jax.Array, t: jax.Array, d: int
) -> tuple[jax.Array, jax.Array | None]:
    """One step of a causal dilated conv with a ring buffer of past inputs.

    ``buf`` has shape ``(..., L, D_in)`` with ``L = (K-1) d``: input ``x_s`` for
    the last ``L`` steps is stored at slot ``s mod L`` (zeros stand for the
    padding before the sequence start). At step ``t`` the tap with look-back
    ``m`` reads slot ``(t - m) mod L``; the tap with ``m = L`` reads slot
    ``t mod L``, which is then overwritten by ``x_t`` (it is never needed
    again). A ring buffer costs ``O(K D)`` per step instead of the ``O(L D)`` of
    shifting the whole window.
    """
    k_size = w.shape[0]
    y = x @ w[k_size - 1]
    if b is not None:
        y = y + b
    if k_size == 1:
        return y, buf
    length = (k_size - 1) * d
    pos = t % length
    lags = np.arange(k_size - 1, 0, -1) * d  # look-back of taps 0..K-2
    idx = (pos - jnp.asarray(lags, dtype=pos.dtype)) % length
    past = jnp.take(buf, idx, axis=-2)  # (..., K-1, D_in)
    y = y + jnp.einsum("...ki,kio->...o", past, w[: k_size - 1])
    buf = lax.dynamic_update_slice_in_dim(buf, x[..., None, :].astype(buf.dtype), pos, axis=-2)
    return y, buf


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_impl(conv_impl: str) -> None:
    if conv_impl != "auto" and conv_impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be 'auto' or one of {CONV_IMPLS}, got {conv_impl!r}")


def _check_input(name: str, xs: jax.Array, expected: int, what: str = "(..., T, D)") -> None:
    min_ndim = 2 if "T" in what else 1
    if xs.ndim < min_ndim:
        raise ValueError(f"{name} expects input of shape {what}, got shape {xs.shape}")
    if xs.shape[-1] != expected:
        raise ValueError(f"{name} expects input size {expected}, got {xs.shape[-1]}")


def _draw(key: jax.Array, shapes: Sequence[tuple[int, ...]], dtype, uniform: bool = False) -> list[jax.Array]:
    """Draws N(0, 1) (or U(-1, 1)) arrays of the given shapes from one flat sample.

    One random draw for all tensors instead of one per tensor: the threefry +
    inverse-erf program is large, and compiling it once per parameter made
    ``init`` of a deep net take seconds on CPU.
    """
    sizes = [math.prod(s) for s in shapes]
    total = max(1, sum(sizes))
    if uniform:
        flat = jax.random.uniform(key, (total,), dtype, -1.0, 1.0)
    else:
        flat = jax.random.normal(key, (total,), dtype)
    out, off = [], 0
    for shape, n in zip(shapes, sizes):
        out.append(flat[off : off + n].reshape(shape))
        off += n
    return out


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _jit_init(net, key, input_size, dtype):
    return net._init(key, input_size, dtype)


def _params_dtype(params: Params):
    return jax.tree_util.tree_leaves(params)[0].dtype


# ---------------------------------------------------------------------------
# TCN
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TCN:
    r"""Temporal convolutional network of Bai, Kolter & Koltun (2018).

    ``levels`` residual blocks; block ``i`` uses dilation :math:`d = 2^i` and
    computes, with :math:`C_d` a causal dilated conv (see :func:`causal_conv`)::

        h   = Dropout(ReLU(C_d^{(1)}(x)))
        h   = Dropout(ReLU(C_d^{(2)}(h)))
        out = ReLU(h + R(x))

    where :math:`R` is a 1x1 conv when the block's input and output widths
    differ and the identity otherwise. Every block has ``hidden_size``
    channels except the last, which has ``output_size`` when that is set (the
    TCN repository's character model ends in its embedding's width, so that the
    decoder can share the embedding table). Each block adds :math:`2(K-1)2^i`
    steps of look-back, so the receptive field is
    :math:`1 + 2(K-1)(2^L - 1)`.

    With ``weight_norm`` (as in the paper) each conv kernel is
    :math:`W = g \, v / \lVert v \rVert`, the norm taken over ``(kernel, in)``
    per output channel. Init is what the reference code *effectively* does:
    its ``conv.weight.data.normal_(0, 0.01)`` writes to the tensor that
    PyTorch's ``weight_norm`` recomputes from ``g`` and ``v`` before every
    forward, so it has no effect (locuslab/TCN issue #1, acknowledged there),
    and the weight-normed kernels keep PyTorch's Conv1d default,
    ``v ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with ``fan_in = K * D_in`` and
    ``g = ||v||`` (the effective kernel equals ``v`` at init). The 1x1
    residual conv (not weight-normed) does get ``N(0, 0.01^2)``, and so do the
    kernels when ``weight_norm=False``. Biases ``U(-1/sqrt(fan_in),
    1/sqrt(fan_in))``. (With ``N(0, 0.01^2)`` kernels under weight norm, the
    TCN stays at the mean-prediction MSE of the adding problem even at T = 5;
    with the effective init it solves it: ``tests/test_convnets.py``.)

    The dataclass is frozen (hashable), so it can be a static argument of
    ``jax.jit``; params are a plain pytree::

        {"levels": [{"conv1": {"v", "g", "b"}, "conv2": {...},
                     "res": {"w", "b"}  # only when a block's widths differ
                    }, ...]}

    (``{"w", "b"}`` instead of ``{"v", "g", "b"}`` when ``weight_norm=False``).

    Attributes:
        hidden_size: channels of every block but (with ``output_size``) the last.
        levels: number of residual blocks ``L >= 1``.
        kernel_size: taps per conv ``K >= 1``.
        dropout: elementwise dropout rate in ``[0, 1)`` after each ReLU in a
            block, only applied when ``apply(..., deterministic=False)``.
        weight_norm: reparametrise conv kernels as ``g v / ||v||``.
        conv_impl: how convolutions are computed: ``"auto"`` (by backend) or one of
            :data:`CONV_IMPLS`.
        output_size: channels of the last block (0: ``hidden_size``).
    """

    hidden_size: int
    levels: int
    kernel_size: int
    dropout: float = 0.0
    weight_norm: bool = True
    conv_impl: str = DEFAULT_CONV_IMPL
    output_size: int = 0

    def __post_init__(self):
        _check_int("hidden_size", self.hidden_size, 1)
        _check_int("levels", self.levels, 1)
        _check_int("kernel_size", self.kernel_size, 1)
        _check_int("output_size", self.output_size, 0)
        if not isinstance(self.dropout, (int, float, np.floating)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        _check_impl(self.conv_impl)

    @property
    def receptive_field(self) -> int:
        """``1 + 2 (K-1) (2^L - 1)``: how many inputs (incl. the present) each output sees."""
        return 1 + 2 * (self.kernel_size - 1) * (2**self.levels - 1)

    def dilations(self) -> tuple[int, ...]:
        """Dilation of each block, ``2**i``."""
        return tuple(2**i for i in range(self.levels))

    def channels(self) -> tuple[int, ...]:
        """Output width of each block: ``hidden_size``, the last ``output_size`` if set."""
        return (self.hidden_size,) * (self.levels - 1) + (self.output_size or self.hidden_size,)

    # -- parameters --------------------------------------------------------

    def init(self, key: jax.Array, input_size: int, dtype=jnp.float32) -> Params:
        """Initialises parameters.

        Args:
            key: PRNG key.
            input_size: width ``D`` of the inputs ``(..., T, D)``.
            dtype: parameter dtype.

        Returns:
            The params pytree (see class docstring).
        """
        _check_int("input_size", input_size, 1)
        # Jitted as a whole (one compile per net/width/dtype, cached) so eager
        # callers do not compile every random op and slice separately.
        return _jit_init(self, key, int(input_size), jnp.dtype(dtype))

    def _init(self, key: jax.Array, input_size: int, dtype) -> Params:
        k_size = self.kernel_size
        outs = self.channels()
        widths = list(zip((input_size,) + outs[:-1], outs))  # (in, out) width of each level
        # Kernel shapes (conv1, conv2[, res]) and bias (size, fan_in) per level.
        w_shapes, b_specs = [], []
        for d_in, h in widths:
            w_shapes += [(k_size, d_in, h), (k_size, h, h)]
            b_specs += [(h, k_size * d_in), (h, k_size * h)]
            if d_in != h:
                w_shapes.append((d_in, h))
                b_specs.append((h, d_in))
        kw, ku, kb = jax.random.split(key, 3)
        # Weight-normed conv kernels: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (the
        # reference's effective init, see the class docstring); the rest N(0, 0.01^2).
        normal = _draw(kw, w_shapes, dtype)
        uniform = _draw(ku, w_shapes, dtype, uniform=True)
        ws = iter(u / math.sqrt(shape[0] * shape[1])
                  if self.weight_norm and len(shape) == 3 else 0.01 * w
                  for w, u, shape in zip(normal, uniform, w_shapes))
        # U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default conv bias init.
        bs = iter(u / math.sqrt(fan_in) for u, (_, fan_in) in
                  zip(_draw(kb, [(n,) for n, _ in b_specs], dtype, uniform=True), b_specs))

        def conv():
            v, b = next(ws), next(bs)
            if self.weight_norm:
                # g = ||v|| makes the effective kernel g v/||v|| equal v at init.
                return {"v": v, "g": jnp.sqrt(jnp.sum(v * v, axis=(0, 1))), "b": b}
            return {"w": v, "b": b}

        levels = []
        for d_in, h in widths:
            level = {"conv1": conv(), "conv2": conv()}
            if d_in != h:
                level["res"] = {"w": next(ws), "b": next(bs)}
            levels.append(level)
        return {"levels": levels}

    def _kernel(self, p) -> jax.Array:
        """Effective conv kernel ``(K, D_in, D_out)`` of one conv's params."""
        if "v" in p:
            v = p["v"]
            norm = jnp.sqrt(jnp.sum(v * v, axis=(0, 1)))
            return v * (p["g"] / norm)
        return p["w"]

    def _input_size(self, params: Params) -> int:
        lv = params["levels"]
        if len(lv) != self.levels:
            raise ValueError(f"TCN has levels={self.levels} but params have {len(lv)} levels")
        c1 = lv[0]["conv1"]
        shape = (c1["v"] if "v" in c1 else c1["w"]).shape
        if shape[0] != self.kernel_size or shape[2] != self.channels()[0]:
            raise ValueError(
                f"params do not match TCN(hidden_size={self.hidden_size}, kernel_size={self.kernel_size}, "
                f"output_size={self.output_size}): first kernel has shape {shape}"
            )
        return shape[1]

    # -- full-sequence forward ---------------------------------------------

    def apply(
        self,
        params: Params,
        xs: jax.Array,
        *,
        key: jax.Array | None = None,
        deterministic: bool = True,
    ) -> jax.Array:
        """Runs the TCN over a whole sequence.

        Args:
            params: from :meth:`init`.
            xs: inputs ``(..., T, D)``.
            key: PRNG key for dropout; required when ``deterministic=False``.
            deterministic: if True (default) dropout is the identity.

        Returns:
            ``(..., T, C)``, ``C`` the last block's width (``channels()[-1]``).

        Raises:
            ValueError: wrong input width/rank, or ``deterministic=False``
                without ``key``.
        """
        _check_input("TCN", xs, self._input_size(params))
        if not deterministic and key is None:
            raise ValueError("TCN.apply with deterministic=False needs a dropout `key`")
        use_dropout = not deterministic and self.dropout > 0.0
        h = xs
        for i, (lv, d) in enumerate(zip(params["levels"], self.dilations())):
            z = jax.nn.relu(causal_conv(h, self._kernel(lv["conv1"]), lv["conv1"]["b"], d, self.conv_impl))
            if use_dropout:
                z = _dropout(jax.random.fold_in(key, 2 * i), z, self.dropout)
            z = jax.nn.relu(causal_conv(z, self._kernel(lv["conv2"]), lv["conv2"]["b"], d, self.conv_impl))
            if use_dropout:
                z = _dropout(jax.random.fold_in(key, 2 * i + 1), z, self.dropout)
            res = h @ lv["res"]["w"] + lv["res"]["b"] if "res" in lv else h
            h = jax.nn.relu(z + res)
        return h

    # -- streaming ---------------------------------------------------------

    def _period(self) -> int:
        # Every ring length (K-1) 2^i divides (K-1) 2^(L-1); keeping the step
        # counter modulo that keeps it bounded (no int32 overflow).
        return max(1, (self.kernel_size - 1) * 2 ** (self.levels - 1))

    def init_stream_state(self, params: Params, batch_shape: Sequence[int] = (), dtype=None) -> Params:
        """Zero state for :meth:`stream_step` (zeros = the causal padding).

        Each conv keeps a ring buffer of its last ``(K-1) d`` inputs.

        Args:
            params: from :meth:`init`.
            batch_shape: leading batch dims of the ``x_t`` to be streamed.
            dtype: buffer dtype (default: the params' dtype).

        Returns:
            ``{"t": int32 step counter, "levels": [{"conv1": buf, "conv2": buf}]}``.
        """
        d_in = self._input_size(params)
        dtype = dtype or _params_dtype(params)
        batch_shape = tuple(batch_shape)
        levels = []
        outs = self.channels()
        for d, w_in, w_out in zip(self.dilations(), (d_in,) + outs[:-1], outs):
            length = (self.kernel_size - 1) * d
            levels.append({
                "conv1": jnp.zeros(batch_shape + (length, w_in), dtype),
                "conv2": jnp.zeros(batch_shape + (length, w_out), dtype),
            })
        return {"t": jnp.zeros((), jnp.int32), "levels": levels}

    def stream_step(self, params: Params, state: Params, x_t: jax.Array) -> tuple[Params, jax.Array]:
        """Advances one time step (inference; no dropout).

        ``O(levels * K * hidden^2)`` work per step, independent of the
        receptive field: past activations are cached instead of recomputed.

        Args:
            params: from :meth:`init`.
            state: from :meth:`init_stream_state` or a previous step.
            x_t: input at this step, ``(..., D)``.

        Returns:
            ``(new_state, y_t)`` with ``y_t`` of shape ``(..., C)`` (the last
            block's width), equal to ``apply(params, xs)[..., t, :]``.
        """
        _check_input("TCN", x_t, self._input_size(params), what="(..., D)")
        t = state["t"]
        h = x_t
        new_levels = []
        for lv, st, d in zip(params["levels"], state["levels"], self.dilations()):
            z, b1 = _stream_conv(self._kernel(lv["conv1"]), lv["conv1"]["b"], st["conv1"], h, t, d)
            z = jax.nn.relu(z)
            z, b2 = _stream_conv(self._kernel(lv["conv2"]), lv["conv2"]["b"], st["conv2"], z, t, d)
            z = jax.nn.relu(z)
            res = h @ lv["res"]["w"] + lv["res"]["b"] if "res" in lv else h
            h = jax.nn.relu(z + res)
            new_levels.append({"conv1": b1, "conv2": b2})
        return {"t": (t + 1) % self._period(), "levels": new_levels}, h


def _skip_and_residual(layer: Params, g: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    """A WaveNet layer's skip and residual 1x1 convs of the gated ``g``.

    Both read ``g``, so they are one matmul with the kernels side by side
    (``g @ [W_skip | W_res]``): one GEMM fewer per layer to launch, and to
    autotune when a GPU compiles the step. The last layer has no residual.
    """
    skip = layer["skip"]
    if "res" not in layer:
        return g @ skip["w"] + skip["b"], None
    res = layer["res"]
    n = skip["w"].shape[-1]
    z = g @ jnp.concatenate([skip["w"], res["w"]], axis=-1) + jnp.concatenate([skip["b"], res["b"]])
    return z[..., :n], z[..., n:]


def _dropout(key: jax.Array, x: jax.Array, rate: float) -> jax.Array:
    """Inverted elementwise dropout: zero with prob ``rate``, scale the rest by 1/(1-rate)."""
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


# ---------------------------------------------------------------------------
# WaveNet
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WaveNet:
    r"""WaveNet-style stack of gated residual dilated causal convs (van den Oord et al. 2016).

    With ``n = levels * stacks`` layers, layer ``j`` has dilation
    :math:`d_j = 2^{j \bmod L}` and computes::

        h_0       = x W_in + b_in                         (1x1 conv to hidden_size)
        [a, b]    = C_{d_j}(h_j)                          (causal conv to 2*hidden)
        g_j       = tanh(a) * sigmoid(b)                  (gated activation)
        h_{j+1}   = h_j + g_j W_res_j + b_res_j           (residual 1x1)
        s         = sum_j (g_j W_skip_j + b_skip_j)       (skip 1x1, skip_size)
        y         = ReLU(s) W_out + b_out                 (1x1 conv to hidden_size)

    The last layer's residual output would feed nothing, so it has no
    residual conv (no dead parameters). Receptive field:
    :math:`1 + (K-1) \cdot stacks \cdot (2^L - 1)`.

    Init: every kernel ``N(0, 1/fan_in)`` (keeps activations O(1) through the
    gated stack for any width), biases zero.

    Params::

        {"input": {"w", "b"}, "layers": [{"conv": {"w", "b"}, "skip": {"w", "b"},
         "res": {"w", "b"}}, ...], "output": {"w", "b"}}

    ``apply`` accepts ``key``/``deterministic`` for interface parity with
    :class:`TCN`; WaveNet has no dropout.

    Attributes:
        hidden_size: residual width (and output width).
        levels: dilations per stack, ``1, 2, ..., 2^(L-1)``.
        kernel_size: taps per dilated conv (2 in the paper).
        stacks: how many times the dilation cycle repeats.
        skip_size: width of the skip connections (default ``hidden_size``).
        conv_impl: how convolutions are computed: ``"auto"`` (by backend) or one of
            :data:`CONV_IMPLS`.
    """

    hidden_size: int
    levels: int
    kernel_size: int = 2
    stacks: int = 1
    skip_size: int | None = None
    conv_impl: str = DEFAULT_CONV_IMPL

    def __post_init__(self):
        _check_int("hidden_size", self.hidden_size, 1)
        _check_int("levels", self.levels, 1)
        _check_int("kernel_size", self.kernel_size, 1)
        _check_int("stacks", self.stacks, 1)
        if self.skip_size is not None:
            _check_int("skip_size", self.skip_size, 1)
        _check_impl(self.conv_impl)

    @property
    def receptive_field(self) -> int:
        """``1 + (K-1) * stacks * (2^L - 1)``."""
        return 1 + (self.kernel_size - 1) * self.stacks * (2**self.levels - 1)

    @property
    def _skip(self) -> int:
        return self.hidden_size if self.skip_size is None else self.skip_size

    def dilations(self) -> tuple[int, ...]:
        """Dilation of each layer, ``2**(j % levels)``."""
        return tuple(2 ** (j % self.levels) for j in range(self.levels * self.stacks))

    def init(self, key: jax.Array, input_size: int, dtype=jnp.float32) -> Params:
        """Initialises parameters for inputs of width ``input_size``."""
        _check_int("input_size", input_size, 1)
        return _jit_init(self, key, int(input_size), jnp.dtype(dtype))

    def _init(self, key: jax.Array, input_size: int, dtype) -> Params:
        h, s, k_size = self.hidden_size, self._skip, self.kernel_size
        n = len(self.dilations())
        shapes = [(input_size, h), (s, h)]
        for j in range(n):
            shapes += [(k_size, h, 2 * h), (h, s)] + ([(h, h)] if j < n - 1 else [])
        # N(0, 1/fan_in) kernels (fan_in = all but the output axis), zero biases.
        ws = iter(w / math.sqrt(math.prod(w.shape[:-1])) for w in _draw(key, shapes, dtype))

        def dense():
            w = next(ws)
            return {"w": w, "b": jnp.zeros((w.shape[-1],), dtype)}

        params = {"input": dense(), "output": dense(), "layers": []}
        for j in range(n):
            layer = {"conv": dense(), "skip": dense()}
            if j < n - 1:
                layer["res"] = dense()
            params["layers"].append(layer)
        return params

    def _input_size(self, params: Params) -> int:
        if len(params["layers"]) != len(self.dilations()):
            raise ValueError(
                f"WaveNet has levels*stacks={len(self.dilations())} layers but params have "
                f"{len(params['layers'])}"
            )
        w = params["input"]["w"]
        if w.shape[1] != self.hidden_size:
            raise ValueError(f"params do not match WaveNet(hidden_size={self.hidden_size})")
        return w.shape[0]

    def _gate(self, z: jax.Array) -> jax.Array:
        a, b = jnp.split(z, 2, axis=-1)
        return jnp.tanh(a) * jax.nn.sigmoid(b)

    def apply(
        self,
        params: Params,
        xs: jax.Array,
        *,
        key: jax.Array | None = None,
        deterministic: bool = True,
    ) -> jax.Array:
        """Runs the WaveNet over a whole sequence ``(..., T, D) -> (..., T, hidden_size)``.

        Raises:
            ValueError: wrong input width/rank, or ``deterministic=False``
                without ``key`` (kept for parity with :class:`TCN`).
        """
        _check_input("WaveNet", xs, self._input_size(params))
        if not deterministic and key is None:
            raise ValueError("WaveNet.apply with deterministic=False needs a `key`")
        h = xs @ params["input"]["w"] + params["input"]["b"]
        skips = None
        for lp, d in zip(params["layers"], self.dilations()):
            g = self._gate(causal_conv(h, lp["conv"]["w"], lp["conv"]["b"], d, self.conv_impl))
            s, r = _skip_and_residual(lp, g)
            skips = s if skips is None else skips + s
            if r is not None:
                h = h + r
        return jax.nn.relu(skips) @ params["output"]["w"] + params["output"]["b"]

    def _period(self) -> int:
        return max(1, (self.kernel_size - 1) * 2 ** (self.levels - 1))

    def init_stream_state(self, params: Params, batch_shape: Sequence[int] = (), dtype=None) -> Params:
        """Zero state for :meth:`stream_step`: one ring buffer of ``(K-1) d`` past inputs per layer."""
        self._input_size(params)
        dtype = dtype or _params_dtype(params)
        batch_shape = tuple(batch_shape)
        bufs = [
            jnp.zeros(batch_shape + ((self.kernel_size - 1) * d, self.hidden_size), dtype)
            for d in self.dilations()
        ]
        return {"t": jnp.zeros((), jnp.int32), "layers": bufs}

    def stream_step(self, params: Params, state: Params, x_t: jax.Array) -> tuple[Params, jax.Array]:
        """One step of cached ("fast WaveNet") inference: ``x_t (..., D) -> y_t (..., hidden)``."""
        _check_input("WaveNet", x_t, self._input_size(params), what="(..., D)")
        t = state["t"]
        h = x_t @ params["input"]["w"] + params["input"]["b"]
        skips = None
        bufs = []
        for lp, buf, d in zip(params["layers"], state["layers"], self.dilations()):
            z, buf = _stream_conv(lp["conv"]["w"], lp["conv"]["b"], buf, h, t, d)
            g = self._gate(z)
            s, r = _skip_and_residual(lp, g)
            skips = s if skips is None else skips + s
            if r is not None:
                h = h + r
            bufs.append(buf)
        y = jax.nn.relu(skips) @ params["output"]["w"] + params["output"]["b"]
        return {"t": (t + 1) % self._period(), "layers": bufs}, y
