"""Numerical tests of seqbench.convnets (TCN, WaveNet, causal conv forms).

Float64 checks run inside ``jax.enable_x64(True)`` so they do not change the
global config for other test files.

Speed note: on a small CPU, XLA compiles dominate this file (~0.5 s each), so
every numerical check runs jitted, all ``conv_impl`` forms of a net are
computed inside one jitted function, and most tests build parameters from
``jax.eval_shape(net.init)`` plus numpy draws (no compile) rather than
calling ``init``.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqbench import convnets
from seqbench.convnets import CONV_IMPLS, TCN, WaveNet, causal_conv


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def np_causal_conv(x, w, b, d):
    """Reference: y[..., t, o] = b[o] + sum_k sum_i w[k, i, o] x[..., t - (K-1-k) d, i]."""
    x, w, b = np.asarray(x), np.asarray(w), np.asarray(b)
    k_size, d_in, d_out = w.shape
    t_len = x.shape[-2]
    y = np.zeros(x.shape[:-1] + (d_out,))
    for t in range(t_len):
        for o in range(d_out):
            acc = np.full(x.shape[:-2], b[o], dtype=np.float64)
            for k in range(k_size):
                s = t - (k_size - 1 - k) * d
                if s < 0:  # zero padding before the sequence start
                    continue
                for i in range(d_in):
                    acc = acc + x[..., s, i] * w[k, i, o]
            y[..., t, o] = acc
    return y


def _with_impl(net, impl):
    return type(net)(**{**net.__dict__, "conv_impl": impl})


def _random_params(net, d_in, seed=0, low=None, high=None, dtype=jnp.float64):
    """Params with init's structure, values from numpy (no XLA compile).

    Default: N(0, 0.5^2) entries. With ``low``/``high``: U(low, high) entries
    (strictly positive when low > 0).
    """
    shapes = jax.eval_shape(lambda k: net.init(k, d_in, dtype=dtype), jax.random.PRNGKey(0))
    rng = np.random.default_rng(seed)

    def draw(s):
        v = rng.normal(0, 0.5, s.shape) if low is None else rng.uniform(low, high, s.shape)
        return jnp.asarray(v, dtype)

    return jax.tree_util.tree_map(draw, shapes)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _apply_all_impls(net, params, x, impls=CONV_IMPLS):
    """``net.apply`` under each of ``impls``, in one compiled program."""
    return {impl: _with_impl(net, impl).apply(params, x) for impl in impls}


# ---------------------------------------------------------------------------
# The conv forms
# ---------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=3)
def _conv_all_impls(x, w, b, d):
    return {impl: causal_conv(x, w, b, d, impl) for impl in CONV_IMPLS}


@pytest.mark.parametrize(
    "lead,t_len,k_size,d",
    [((2,), 9, 3, 1), ((2, 3), 11, 3, 2), ((), 7, 2, 4), ((2,), 5, 3, 4), ((1,), 6, 1, 3)],
)
def test_every_impl_matches_numpy_reference(x64, lead, t_len, k_size, d):
    # (T=5, K=3, d=4): the far tap's look-back 8 >= T, it only sees padding.
    rng = np.random.default_rng(0)
    x = rng.normal(size=lead + (t_len, 3))
    w = rng.normal(size=(k_size, 3, 4))
    b = rng.normal(size=(4,))
    ref = np_causal_conv(x, w, b, d)
    for impl, y in _conv_all_impls(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b), d).items():
        assert y.shape == lead + (t_len, 4)
        np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-12, atol=1e-12, err_msg=impl)


NETS = [  # (net, input width)
    (TCN(4, 3, 3), 3),  # 1x1 residual conv in level 0, weight norm
    (TCN(3, 2, 2, weight_norm=False), 3),  # identity residual, plain kernels
    (WaveNet(4, 3, 2, stacks=2), 2),
    (WaveNet(3, 2, 3, skip_size=5), 3),
]


@pytest.mark.parametrize("net,d_in", [NETS[1], NETS[3]])
def test_all_impls_agree_on_nets(x64, net, d_in):
    # (The receptive-field test below also checks agreement, on other configs.)
    params = _random_params(net, d_in)
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 19, d_in), jnp.float64)
    outs = _apply_all_impls(net, params, x)
    ref = outs["shifted_matmul"]
    assert ref.shape == (2, 19, net.hidden_size) and ref.dtype == jnp.float64
    for impl, y in outs.items():
        np.testing.assert_allclose(np.asarray(y), np.asarray(ref), rtol=1e-11, atol=1e-12, err_msg=impl)


@pytest.mark.parametrize("net,d_in", [NETS[2], NETS[3]])
def test_wavenet_is_its_definition(x64, net, d_in):
    # numpy, layer by layer as the docstring writes it (separate skip and
    # residual convs), against the one-matmul skip+residual of ``apply`` and
    # ``stream_step``: a swapped or mis-split kernel would agree with itself.
    params = jax.tree_util.tree_map(np.asarray, _random_params(net, d_in))
    x = np.random.default_rng(3).normal(size=(2, 13, d_in))
    h = x @ params["input"]["w"] + params["input"]["b"]
    skips = 0.0
    for lp, d in zip(params["layers"], net.dilations()):
        a, b = np.split(np_causal_conv(h, lp["conv"]["w"], lp["conv"]["b"], d), 2, axis=-1)
        g = np.tanh(a) / (1.0 + np.exp(-b))
        skips = skips + g @ lp["skip"]["w"] + lp["skip"]["b"]
        if "res" in lp:
            h = h + g @ lp["res"]["w"] + lp["res"]["b"]
    ref = np.maximum(skips, 0.0) @ params["output"]["w"] + params["output"]["b"]
    np.testing.assert_allclose(np.asarray(net.apply(params, jnp.asarray(x))), ref, rtol=1e-10, atol=1e-12)
    state = net.init_stream_state(params, (2,))
    streamed = []
    for t in range(x.shape[1]):
        state, y = net.stream_step(params, state, jnp.asarray(x[:, t]))
        streamed.append(y)
    np.testing.assert_allclose(np.stack(streamed, axis=1), ref, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------
# Causality and the exact receptive field
# ---------------------------------------------------------------------------


def test_receptive_field_formulas():
    assert TCN(8, 8, 3).receptive_field == 1 + 2 * 2 * 255
    assert TCN(8, 1, 1).receptive_field == 1
    assert WaveNet(8, 10, 2, stacks=3).receptive_field == 1 + 3 * 1023
    assert WaveNet(8, 4, 3).receptive_field == 1 + 2 * 15


ALL, DEFAULT = CONV_IMPLS, (convnets.DEFAULT_CONV_IMPL,)


@pytest.mark.parametrize(
    "net,impls",
    [(TCN(3, 1, 2), DEFAULT), (TCN(3, 2, 3), ALL), (TCN(3, 3, 2), DEFAULT), (TCN(3, 2, 1), DEFAULT),
     (TCN(3, 2, 3, output_size=2), ALL),
     (WaveNet(3, 2, 2, stacks=2), ALL), (WaveNet(3, 3, 3), DEFAULT)],
    ids=lambda v: repr(v) if not isinstance(v, tuple) else str(len(v)),
)
def test_causal_with_exact_receptive_field(x64, net, impls):
    """Perturb x_s: outputs before s and from s + RF on are bit-for-bit unchanged,
    every output in [s, s + RF - 1] (the last included) changes; where several
    impls run, they also agree numerically.

    All params and inputs are strictly positive, so every ReLU is active and
    every tanh/sigmoid gate has nonzero slope: every path is live and a change
    at x_s reaches every output it is connected to.
    """
    d_in, s, rf = 2, 3, net.receptive_field
    scale = 1.0 if isinstance(net, TCN) else 0.3  # keep the tanh gates out of saturation
    params = _random_params(net, d_in, low=0.05 * scale, high=scale)
    t_len = s + rf + 4
    x = jax.random.uniform(jax.random.PRNGKey(5), (2, t_len, d_in), jnp.float64, 0.5, 1.0)
    both = _apply_all_impls(net, params, jnp.stack([x, x.at[:, s, :].add(1.0)]), impls)
    for impl, y in both.items():
        y0, y1 = np.asarray(y[0]), np.asarray(y[1])
        np.testing.assert_array_equal(y1[:, :s], y0[:, :s], err_msg=impl)
        moved = np.all(y1[:, s : s + rf] != y0[:, s : s + rf], axis=(0, 2))
        assert moved.all(), f"{impl}: outputs at t={s + np.flatnonzero(~moved)} did not depend on x_{s}"
        np.testing.assert_array_equal(y1[:, s + rf :], y0[:, s + rf :], err_msg=impl)
        np.testing.assert_allclose(y, both[impls[0]], rtol=1e-11, atol=1e-12, err_msg=impl)


# ---------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=(0, 3))
def _stream_and_apply(net, params, xs, batch_shape):
    state = net.init_stream_state(params, batch_shape)

    def step(state, x_t):
        return net.stream_step(params, state, x_t)

    _, ys = jax.lax.scan(step, state, jnp.moveaxis(xs, -2, 0))
    return jnp.moveaxis(ys, 0, -2), net.apply(params, xs)


@pytest.mark.parametrize(
    "net,d_in,batch_shape",
    [(net, d_in, bs) for (net, d_in), bs in zip(NETS, [(2,), (), (2,), (2, 2)])]
    + [(TCN(3, 2, 1), 2, (2,)), (TCN(4, 3, 2, output_size=2), 3, (2,))],
)
def test_stream_step_equals_apply(x64, net, d_in, batch_shape):
    # T is longer than the receptive field and several ring-buffer periods.
    t_len = net.receptive_field + 13
    params = _random_params(net, d_in)
    xs = jax.random.normal(jax.random.PRNGKey(4), batch_shape + (t_len, d_in), jnp.float64)
    ys, ref = _stream_and_apply(net, params, xs, batch_shape)
    assert ys.shape == ref.shape
    np.testing.assert_allclose(np.asarray(ys), np.asarray(ref), rtol=1e-11, atol=1e-12)


def test_stream_state_shapes():
    net = TCN(4, 2, 3)
    state = net.init_stream_state(jax.eval_shape(lambda k: net.init(k, 3), jax.random.PRNGKey(0)), (5,))
    # Each conv caches exactly the (K-1) d past inputs it reads.
    assert [lv["conv1"].shape for lv in state["levels"]] == [(5, 2, 3), (5, 4, 4)]
    assert [lv["conv2"].shape for lv in state["levels"]] == [(5, 2, 4), (5, 4, 4)]
    narrow = TCN(4, 2, 3, output_size=2)
    state = narrow.init_stream_state(jax.eval_shape(lambda k: narrow.init(k, 3), jax.random.PRNGKey(0)), (5,))
    assert [lv["conv1"].shape for lv in state["levels"]] == [(5, 2, 3), (5, 4, 4)]
    assert [lv["conv2"].shape for lv in state["levels"]] == [(5, 2, 4), (5, 4, 2)]


@pytest.mark.parametrize("net,d_in", [(TCN(4, 3, 2, output_size=2), 3), (TCN(3, 2, 3, output_size=5), 3),
                                      (TCN(3, 1, 2, output_size=2), 3)])
def test_tcn_is_its_definition(x64, net, d_in):
    # numpy, block by block as the class docstring writes it, with the widths
    # spelled out here: hidden_size channels, the last block output_size, a
    # 1x1 residual conv wherever a block's widths differ.
    params = jax.tree_util.tree_map(np.asarray, _random_params(net, d_in))
    widths = [d_in] + [net.hidden_size] * (net.levels - 1) + [net.output_size]
    x = np.random.default_rng(3).normal(size=(2, 11, d_in))
    h = x
    for lp, d, w_in, w_out in zip(params["levels"], net.dilations(), widths, widths[1:]):
        kernel = lambda p: p["g"] * p["v"] / np.sqrt(np.sum(p["v"] ** 2, axis=(0, 1)))
        assert kernel(lp["conv1"]).shape == (net.kernel_size, w_in, w_out)
        z = np.maximum(np_causal_conv(h, kernel(lp["conv1"]), lp["conv1"]["b"], d), 0.0)
        z = np.maximum(np_causal_conv(z, kernel(lp["conv2"]), lp["conv2"]["b"], d), 0.0)
        assert ("res" in lp) == (w_in != w_out)
        res = h @ lp["res"]["w"] + lp["res"]["b"] if w_in != w_out else h
        h = np.maximum(z + res, 0.0)
    assert h.shape[-1] == net.output_size == net.channels()[-1]
    np.testing.assert_allclose(np.asarray(net.apply(params, jnp.asarray(x))), h, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "net,impls",
    [(TCN(3, 2, 2), ("im2col", "shifted_output")), (WaveNet(3, 2, 2, stacks=2), ("shifted_matmul",))],
    ids=["tcn", "wavenet"],
)
def test_gradients_match_finite_differences(x64, net, impls):
    """<grad L, v> == (L(p + eps v) - L(p - eps v)) / 2 eps, in float64, along
    random directions in (params, input) space. Each of our matmul forms is
    checked once (TCN: im2col, shifted_output; WaveNet: shifted_matmul); the
    lax_conv forms agree in value (tested above) and are differentiated by
    JAX's own conv rules, and each extra form costs seconds of CPU compile."""
    d_in = 2
    params = _random_params(net, d_in)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 7, d_in), jnp.float64)
    c = jax.random.normal(jax.random.PRNGKey(2), (2, 7, net.hidden_size), jnp.float64)

    def losses(p, xs):
        return {impl: jnp.sum(c * _with_impl(net, impl).apply(p, xs)) for impl in impls}

    def value_and_grads(p, xs):
        return {impl: jax.value_and_grad(lambda p, xs, impl=impl: losses(p, xs)[impl], argnums=(0, 1))(p, xs)
                for impl in impls}

    # One compiled program gives the gradients and the perturbed losses.
    value_and_grads = jax.jit(value_and_grads)
    grads = value_and_grads(params, x)
    flat_p, unravel = ravel_pytree(params)
    rng = np.random.default_rng(0)
    eps = 1e-6
    for _ in range(3):
        v = jnp.asarray(rng.normal(size=flat_p.shape))
        vx = jnp.asarray(rng.normal(size=x.shape))
        plus = value_and_grads(unravel(flat_p + eps * v), x + eps * vx)
        minus = value_and_grads(unravel(flat_p - eps * v), x - eps * vx)
        for impl in impls:
            g_p, g_x = grads[impl][1]
            analytic = jnp.vdot(ravel_pytree(g_p)[0], v) + jnp.vdot(g_x, vx)
            fd = (plus[impl][0] - minus[impl][0]) / (2 * eps)
            np.testing.assert_allclose(float(analytic), float(fd), rtol=1e-6, atol=1e-9, err_msg=impl)


# ---------------------------------------------------------------------------
# Init
# ---------------------------------------------------------------------------


def test_tcn_init_is_the_references_effective_init():
    net = TCN(64, 2, 3)
    params = net.init(jax.random.PRNGKey(0), 16)
    c = params["levels"][1]["conv1"]
    # g = ||v|| per output channel, so the effective kernel is v at init.
    np.testing.assert_allclose(net._kernel(c), c["v"], rtol=1e-5, atol=1e-7)
    # PyTorch's Conv1d default (the reference's N(0, 0.01) is overwritten by
    # weight_norm): U(-b, b), b = 1/sqrt(K * D_in); std b/sqrt(3) over 12288 draws.
    bound = 1 / np.sqrt(3 * 64)
    assert float(jnp.max(jnp.abs(c["v"]))) <= bound
    assert abs(float(jnp.std(c["v"])) - bound / np.sqrt(3)) < 0.03 * bound
    # The 1x1 residual conv is not weight-normed: N(0, 0.01^2) takes effect.
    assert abs(float(jnp.std(params["levels"][0]["res"]["w"])) - 0.01) < 0.001
    assert float(jnp.max(jnp.abs(c["b"]))) <= bound
    assert float(jnp.max(jnp.abs(c["b"]))) > 0.8 * bound  # 64 uniform draws fill the range
    assert "res" in params["levels"][0] and "res" not in params["levels"][1]
    assert params["levels"][0]["res"]["w"].shape == (16, 64)
    assert params["levels"][0]["conv1"]["v"].shape == (3, 16, 64)
    # Different slots get different draws (the flat-draw slicing is not reused).
    assert not np.allclose(params["levels"][0]["conv2"]["v"], params["levels"][1]["conv2"]["v"])
    wn = jax.eval_shape(lambda k: TCN(4, 1, 2, weight_norm=False).init(k, 3), jax.random.PRNGKey(0))
    assert set(wn["levels"][0]["conv1"]) == {"w", "b"}


def test_tcn_learns_the_adding_problem():
    # The regression test for the init: with N(0, 0.01^2) kernels under weight
    # norm the TCN stayed at the mean-prediction MSE (~0.17) of this task.
    import optax  # pylint: disable=g-import-not-at-top
    length, batch = 8, 64
    net = TCN(24, 2, 4)  # receptive field 1 + 2*3*3 = 19 >= 8
    key = jax.random.PRNGKey(0)
    params = {"tcn": net.init(key, 2), "w": jnp.zeros((24, 1)), "b": jnp.zeros((1,))}

    def data(k):
        kv, kp = jax.random.split(k)
        values = jax.random.uniform(kv, (batch, length))
        first = jax.random.randint(kp, (batch,), 0, length // 2)
        second = jax.random.randint(jax.random.fold_in(kp, 1), (batch,), length // 2, length)
        marks = (jax.nn.one_hot(first, length) + jax.nn.one_hot(second, length))
        return jnp.stack([values, marks], -1), (values * marks).sum(-1)

    def loss(p, x, y):
        h = net.apply(p["tcn"], x)[:, -1]
        return jnp.mean(((h @ p["w"] + p["b"])[:, 0] - y) ** 2)

    opt = optax.adam(4e-3)

    @jax.jit
    def step(p, s, k):
        x, y = data(k)
        l, g = jax.value_and_grad(loss)(p, x, y)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, l

    losses = []
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes dtypes
        state = opt.init(params)
        for i in range(500):
            params, state, l = step(params, state, jax.random.fold_in(key, i))
            losses.append(float(l))
    assert np.mean(losses[:20]) > 0.1
    assert np.mean(losses[-50:]) < 0.02, np.mean(losses[-50:])


# ---------------------------------------------------------------------------
# Dropout
# ---------------------------------------------------------------------------


@jax.jit
def _dropout_outputs(params, x, k1, k2):
    net, plain = TCN(8, 2, 3, dropout=0.5), TCN(8, 2, 3)
    return dict(
        plain=plain.apply(params, x),
        det=net.apply(params, x),
        det_key=net.apply(params, x, key=k1),
        drop1=net.apply(params, x, key=k1, deterministic=False),
        drop2=net.apply(params, x, key=k2, deterministic=False),
        rate0=plain.apply(params, x, key=k1, deterministic=False),
    )


def test_dropout_semantics():
    net = TCN(8, 2, 3, dropout=0.5)
    params = _random_params(net, 4, dtype=jnp.float32)
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 12, 4))
    k1, k2 = jax.random.split(jax.random.PRNGKey(2))
    o = {k: np.asarray(v) for k, v in _dropout_outputs(params, x, k1, k2).items()}
    # deterministic=True: the dropout path is the identity (key or not).
    np.testing.assert_array_equal(o["det"], o["plain"])
    np.testing.assert_array_equal(o["det_key"], o["plain"])
    # deterministic=False: random, different across keys.
    assert np.abs(o["drop1"] - o["plain"]).max() > 1e-3
    assert np.abs(o["drop1"] - o["drop2"]).max() > 1e-3
    # Rate 0 with deterministic=False is still the identity.
    np.testing.assert_array_equal(o["rate0"], o["plain"])
    with pytest.raises(ValueError, match="key"):
        net.apply(params, x, deterministic=False)
    wn = WaveNet(4, 2)
    with pytest.raises(ValueError, match="key"):
        wn.apply(jax.eval_shape(lambda k: wn.init(k, 4), k1), x, deterministic=False)


def test_dropout_mask_rate_and_scale():
    # Inverted dropout: zero w.p. rate, survivors scaled by 1/(1-rate) (mean kept).
    out = np.asarray(jax.jit(convnets._dropout, static_argnums=2)(jax.random.PRNGKey(0), jnp.ones((200, 500)), 0.3))
    np.testing.assert_allclose(out[out != 0], 1 / 0.7, rtol=1e-6)
    assert abs((out == 0).mean() - 0.3) < 0.01


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def test_width_errors():
    # Shapes are checked before any compute, so abstract params suffice.
    tcn, wn = TCN(4, 2, 3), WaveNet(4, 2)
    key = jax.random.PRNGKey(0)
    p_tcn = jax.eval_shape(lambda k: tcn.init(k, 3), key)
    p_wn = jax.eval_shape(lambda k: wn.init(k, 3), key)
    bad = jnp.zeros((2, 10, 5))
    with pytest.raises(ValueError, match="TCN expects input size 3, got 5"):
        tcn.apply(p_tcn, bad)
    with pytest.raises(ValueError, match="WaveNet expects input size 3, got 5"):
        wn.apply(p_wn, bad)
    with pytest.raises(ValueError, match="TCN expects input size 3, got 5"):
        tcn.stream_step(p_tcn, tcn.init_stream_state(p_tcn, (2,)), jnp.zeros((2, 5)))
    with pytest.raises(ValueError, match="WaveNet expects input size 3, got 5"):
        wn.stream_step(p_wn, wn.init_stream_state(p_wn, (2,)), jnp.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"\(\.\.\., T, D\)"):
        tcn.apply(p_tcn, jnp.zeros((3,)))
    with pytest.raises(ValueError, match="levels"):
        TCN(4, 3, 3).apply(p_tcn, jnp.zeros((2, 10, 3)))
    with pytest.raises(ValueError, match="causal_conv expects input size 4, got 2"):
        causal_conv(jnp.zeros((5, 2)), jnp.zeros((3, 4, 6)), None, 1)
    with pytest.raises(ValueError, match="input_size"):
        tcn.init(key, 0)


@pytest.mark.parametrize(
    "make,field",
    [
        (lambda: TCN(4, 0, 3), "levels"),
        (lambda: TCN(4, 2, 0), "kernel_size"),
        (lambda: TCN(0, 2, 3), "hidden_size"),
        (lambda: TCN(4, 2, 3, dropout=1.0), "dropout"),
        (lambda: TCN(4, 2, 3, dropout=-0.1), "dropout"),
        (lambda: TCN(4, 2.5, 3), "levels"),
        (lambda: TCN(4, 2, 3, conv_impl="fft"), "conv_impl"),
        (lambda: TCN(4, 2, 3, output_size=-1), "output_size"),
        (lambda: WaveNet(4, 0), "levels"),
        (lambda: WaveNet(0, 2), "hidden_size"),
        (lambda: WaveNet(4, 2, kernel_size=0), "kernel_size"),
        (lambda: WaveNet(4, 2, stacks=0), "stacks"),
        (lambda: WaveNet(4, 2, skip_size=0), "skip_size"),
        (lambda: WaveNet(4, 2, conv_impl="x"), "conv_impl"),
    ],
)
def test_invalid_config_names_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


# ---------------------------------------------------------------------------
# jit friendliness
# ---------------------------------------------------------------------------


def test_no_retracing():
    chex.clear_trace_counter()
    net = TCN(4, 2, 3)
    params = _random_params(net, 3, dtype=jnp.float32)
    x = jnp.zeros((2, 10, 3))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(params, x):
        return net.apply(params, x)

    # The net as a static argument: equal, freshly built instances hash equal.
    @functools.partial(jax.jit, static_argnums=0)
    @chex.assert_max_traces(n=1)
    def g(net, params, x):
        return net.apply(params, x)

    for i in range(5):
        f(params, x + i)
        g(TCN(4, 2, 3), params, x + i)
        params = jax.tree_util.tree_map(lambda p: p * 1.01, params)
    assert hash(TCN(4, 2, 3)) == hash(TCN(4, 2, 3)) and TCN(4, 2, 3) == TCN(4, 2, 3)
    # The check has teeth: a new shape retraces and is caught.
    with pytest.raises(AssertionError, match="traced > 1"):
        f(params, jnp.zeros((2, 11, 3)))
    chex.clear_trace_counter()


# ---------------------------------------------------------------------------
# Property test over shapes
# ---------------------------------------------------------------------------

_PROP_NETS = [TCN(3, 2, 3, conv_impl="shifted_output"), TCN(2, 3, 2, conv_impl="im2col"),
              TCN(4, 1, 1, conv_impl="lax_conv"), WaveNet(3, 2, 2, stacks=2),
              WaveNet(2, 3, 3, conv_impl="lax_conv_ncw")]
assert len(_PROP_NETS) == 5 and sum(isinstance(n, TCN) for n in _PROP_NETS) == 3


@st.composite
def _cases(draw):
    net = draw(st.sampled_from(_PROP_NETS))
    lead = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    t_len = draw(st.integers(1, 24))
    d_in = draw(st.integers(1, 4))
    s = draw(st.integers(0, t_len - 1))
    return net, lead, t_len, d_in, s


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_cases())
def test_property_shapes_and_causality(case):
    net, lead, t_len, d_in, s = case
    rf = net.receptive_field
    # Positive params and inputs: every path is live (see the receptive-field test).
    scale = 1.0 if isinstance(net, TCN) else 0.3
    with jax.enable_x64(True):
        params = _random_params(net, d_in, low=0.05 * scale, high=scale)
        x = jnp.asarray(np.random.default_rng(1).uniform(0.5, 1.0, size=lead + (t_len, d_in)))
        # Both inputs in one call (a new leading batch dim): one compile per shape.
        y = np.asarray(jax.jit(net.apply)(params, jnp.stack([x, x.at[..., s, :].add(1.0)])))
    y0, y1 = y[0], y[1]
    assert y0.shape == lead + (t_len, net.hidden_size)
    assert np.isfinite(y0).all()
    np.testing.assert_array_equal(y1[..., :s, :], y0[..., :s, :])
    np.testing.assert_array_equal(y1[..., s + rf :, :], y0[..., s + rf :, :])
    if s + rf - 1 < t_len:  # the edge of the window is live
        assert not np.array_equal(y1[..., s + rf - 1, :], y0[..., s + rf - 1, :])


def test_auto_conv_impl_picks_by_backend_and_matches_explicit_forms():
  assert convnets.DEFAULT_CONV_IMPL == "auto"
  # The test machine is a CPU: auto is the CPU form.
  assert convnets.resolve_conv_impl("auto") == convnets.CPU_CONV_IMPL
  assert convnets.resolve_conv_impl("im2col") == "im2col"
  net_auto = TCN(4, 2, 3)
  params = net_auto.init(jax.random.PRNGKey(0), 3)
  xs = jax.random.normal(jax.random.PRNGKey(1), (2, 9, 3))
  for impl in (convnets.CPU_CONV_IMPL, convnets.ACCELERATOR_CONV_IMPL):
    np.testing.assert_allclose(net_auto.apply(params, xs),
                               TCN(4, 2, 3, conv_impl=impl).apply(params, xs), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="conv_impl"):
    TCN(4, 2, 3, conv_impl="fft")
