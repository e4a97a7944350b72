"""Numerical tests of seqbench.convnets (TCN, WaveNet, causal conv forms).

Float64 checks run inside ``jax.enable_x64(True)`` so they do not change the
global config for other test files.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqbench import convnets
from seqbench.convnets import CONV_IMPLS, TCN, WaveNet, causal_conv


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


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


# Everything numerical runs jitted: eager op-by-op dispatch compiles every
# primitive for every new shape, which is far slower on a small CPU.
@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _init(net, key, d_in, dtype=jnp.float64):
    return net.init(key, d_in, dtype=dtype)


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("deterministic",))
def _apply(net, params, x, key=None, deterministic=True):
    return net.apply(params, x, key=key, deterministic=deterministic)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _conv(x, w, b, d, impl):
    return causal_conv(x, w, b, d, impl)


def _with_impl(net, impl):
    return type(net)(**{**net.__dict__, "conv_impl": impl})


def _positive(params, scale=1.0):
    """Makes every parameter strictly positive, so with positive inputs every
    ReLU/gate path is live and a perturbation reaches every output it can."""
    return jax.tree_util.tree_map(lambda p: scale * (jnp.abs(p) + 0.05), params)


# ---------------------------------------------------------------------------
# The conv forms
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("impl", CONV_IMPLS)
@pytest.mark.parametrize(
    "lead,t_len,k_size,d",
    [((2,), 9, 3, 1), ((2, 3), 11, 3, 2), ((), 7, 2, 4), ((2,), 5, 3, 4), ((1,), 6, 1, 3)],
)
def test_causal_conv_matches_numpy_reference(x64, impl, lead, t_len, k_size, d):
    # (5, K=3, d=4): the far tap's look-back 8 >= T, it only sees padding.
    rng = np.random.default_rng(0)
    x = rng.normal(size=lead + (t_len, 3))
    w = rng.normal(size=(k_size, 3, 4))
    b = rng.normal(size=(4,))
    y = _conv(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b), d, impl)
    assert y.shape == lead + (t_len, 4)
    np.testing.assert_allclose(np.asarray(y), np_causal_conv(x, w, b, d), rtol=1e-12, atol=1e-12)


def _tcn_cases():
    return [
        (TCN(6, 3, 3), 4),  # 1x1 residual conv in level 0
        (TCN(4, 2, 2, weight_norm=False), 4),  # identity residual, plain kernels
        (TCN(5, 2, 1), 3),  # kernel 1: pointwise
    ]


def _wavenet_cases():
    return [(WaveNet(5, 3, 2, stacks=2), 3), (WaveNet(4, 2, 3, skip_size=7), 2)]


@pytest.mark.parametrize("net,d_in", _tcn_cases() + _wavenet_cases())
def test_all_impls_agree_on_nets(x64, net, d_in):
    params = _init(net, jax.random.PRNGKey(1), d_in)
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 19, d_in), jnp.float64)
    ref = _apply(_with_impl(net, "shifted_matmul"), params, x)
    assert ref.shape == (2, 19, net.hidden_size)
    assert ref.dtype == jnp.float64
    for impl in CONV_IMPLS:
        y = _apply(_with_impl(net, impl), params, x)
        np.testing.assert_allclose(np.asarray(y), np.asarray(ref), rtol=1e-11, atol=1e-12, err_msg=impl)


# ---------------------------------------------------------------------------
# Causality and the exact receptive field
# ---------------------------------------------------------------------------


def test_receptive_field_formulas():
    assert TCN(8, 8, 3).receptive_field == 1 + 2 * 2 * 255
    assert TCN(8, 1, 1).receptive_field == 1
    assert WaveNet(8, 10, 2, stacks=3).receptive_field == 1 + 3 * 1023
    assert WaveNet(8, 4, 3).receptive_field == 1 + 2 * 15


def _check_receptive_field(net, params, d_in, s=3, extra=4, exact_zero_outside=True):
    rf = net.receptive_field
    t_len = s + rf + extra
    x = jax.random.uniform(jax.random.PRNGKey(5), (2, t_len, d_in), jnp.float64, 0.5, 1.0)
    y0 = np.asarray(_apply(net, params, x))
    y1 = np.asarray(_apply(net, params, x.at[:, s, :].add(1.0)))
    # Causal: nothing before s moves (bit-for-bit).
    np.testing.assert_array_equal(y1[:, :s], y0[:, :s])
    # Every output inside the window [s, s + rf - 1] moves, the last one included ...
    moved = np.all(y1[:, s : s + rf] != y0[:, s : s + rf], axis=(0, 2))
    assert moved.all(), f"outputs at t={s + np.flatnonzero(~moved)} did not depend on x_{s}"
    # ... and none past it does.
    np.testing.assert_array_equal(y1[:, s + rf :], y0[:, s + rf :])


@pytest.mark.parametrize("levels,k_size", [(1, 2), (2, 3), (3, 2), (2, 1)])
def test_tcn_causal_with_exact_receptive_field(x64, levels, k_size):
    net = TCN(3, levels, k_size)
    params = _positive(_init(net, jax.random.PRNGKey(0), 2))
    _check_receptive_field(net, params, 2)


@pytest.mark.parametrize("levels,k_size,stacks", [(2, 2, 1), (2, 2, 2), (3, 3, 1)])
def test_wavenet_causal_with_exact_receptive_field(x64, levels, k_size, stacks):
    net = WaveNet(3, levels, k_size, stacks=stacks)
    params = _positive(_init(net, jax.random.PRNGKey(0), 2), scale=0.5)
    _check_receptive_field(net, params, 2)


@pytest.mark.parametrize("impl", CONV_IMPLS)
def test_receptive_field_every_impl(x64, impl):
    net = TCN(3, 2, 3, conv_impl=impl)
    params = _positive(_init(net, jax.random.PRNGKey(0), 2))
    _check_receptive_field(net, params, 2)


# ---------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------


def _stream(net, params, xs, batch_shape):
    state = net.init_stream_state(params, batch_shape)

    def step(state, x_t):
        return net.stream_step(params, state, x_t)

    _, ys = jax.lax.scan(step, state, jnp.moveaxis(xs, -2, 0))
    return jnp.moveaxis(ys, 0, -2)


@pytest.mark.parametrize(
    "net,d_in,batch_shape",
    [
        (TCN(4, 3, 3), 3, (2,)),
        (TCN(3, 2, 2, weight_norm=False), 3, ()),
        (TCN(3, 2, 1), 2, (2, 2)),
        (WaveNet(4, 3, 2, stacks=2), 2, (2,)),
        (WaveNet(3, 2, 3, skip_size=5), 3, ()),
    ],
)
def test_stream_step_equals_apply(x64, net, d_in, batch_shape):
    # T is longer than the receptive field and several ring-buffer periods.
    t_len = net.receptive_field + 13
    params = _init(net, jax.random.PRNGKey(3), d_in)
    xs = jax.random.normal(jax.random.PRNGKey(4), batch_shape + (t_len, d_in), jnp.float64)
    ys = jax.jit(_stream, static_argnums=(0, 3))(net, params, xs, batch_shape)
    np.testing.assert_allclose(np.asarray(ys), np.asarray(_apply(net, params, xs)), rtol=1e-11, atol=1e-12)


def test_stream_state_shapes():
    net = TCN(4, 3, 3)
    params = _init(net, jax.random.PRNGKey(0), 2, jnp.float32)
    state = net.init_stream_state(params, (5,))
    # Each conv caches exactly the (K-1) d past inputs it reads.
    assert [lv["conv1"].shape for lv in state["levels"]] == [(5, 2, 2), (5, 4, 4), (5, 8, 4)]
    assert [lv["conv2"].shape for lv in state["levels"]] == [(5, 2, 4), (5, 4, 4), (5, 8, 4)]


# ---------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------


def _check_grads_fd(loss, params, x, n_dirs=3, eps=1e-6):
    g_p, g_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    loss = jax.jit(loss)
    flat_p, unravel = jax.flatten_util.ravel_pytree(params)
    flat_g = jax.flatten_util.ravel_pytree(g_p)[0]
    rng = np.random.default_rng(0)
    for _ in range(n_dirs):
        v = jnp.asarray(rng.normal(size=flat_p.shape))
        vx = jnp.asarray(rng.normal(size=x.shape))
        fd = (loss(unravel(flat_p + eps * v), x + eps * vx) - loss(unravel(flat_p - eps * v), x - eps * vx)) / (
            2 * eps
        )
        an = jnp.vdot(flat_g, v) + jnp.vdot(g_x, vx)
        np.testing.assert_allclose(float(an), float(fd), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("impl", CONV_IMPLS)
def test_tcn_gradients_match_finite_differences(x64, impl):
    net = TCN(3, 2, 2, conv_impl=impl)
    params = _init(net, jax.random.PRNGKey(0), 2)
    # Scale the kernels up from the 0.01 init so the conv paths matter.
    params = jax.tree_util.tree_map(lambda p: p * 30.0 if p.ndim >= 2 else p, params)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 7, 2), jnp.float64)
    c = jax.random.normal(jax.random.PRNGKey(2), (2, 7, 3), jnp.float64)
    _check_grads_fd(lambda p, xs: jnp.sum(c * net.apply(p, xs)), params, x)


@pytest.mark.parametrize("impl", ["shifted_matmul", "im2col", "lax_conv"])
def test_wavenet_gradients_match_finite_differences(x64, impl):
    net = WaveNet(3, 2, 2, stacks=2, conv_impl=impl)
    params = _init(net, jax.random.PRNGKey(0), 2)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 7, 2), jnp.float64)
    c = jax.random.normal(jax.random.PRNGKey(2), (2, 7, 3), jnp.float64)
    _check_grads_fd(lambda p, xs: jnp.sum(c * net.apply(p, xs)), params, x)


# ---------------------------------------------------------------------------
# Init
# ---------------------------------------------------------------------------


def test_tcn_init_follows_reference():
    net = TCN(64, 2, 3)
    params = _init(net, jax.random.PRNGKey(0), 16, jnp.float32)
    c = params["levels"][1]["conv1"]
    # g = ||v|| per output channel, so the effective kernel is v at init.
    np.testing.assert_allclose(net._kernel(c), c["v"], rtol=1e-5, atol=1e-7)
    assert abs(float(jnp.std(c["v"])) - 0.01) < 0.0005  # 12288 draws of N(0, 0.01^2)
    bound = 1 / np.sqrt(3 * 64)
    assert float(jnp.max(jnp.abs(c["b"]))) <= bound
    assert "res" in params["levels"][0] and "res" not in params["levels"][1]
    assert params["levels"][0]["res"]["w"].shape == (16, 64)
    assert "w" in TCN(4, 1, 2, weight_norm=False).init(jax.random.PRNGKey(0), 3)["levels"][0]["conv1"]


# ---------------------------------------------------------------------------
# Dropout
# ---------------------------------------------------------------------------


def test_dropout_semantics():
    net = TCN(8, 2, 3, dropout=0.5)
    params = _init(net, jax.random.PRNGKey(0), 4, jnp.float32)
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 12, 4))
    plain = _apply(TCN(8, 2, 3), params, x)
    k1, k2 = jax.random.split(jax.random.PRNGKey(2))
    # deterministic=True: the dropout path is the identity (key or not).
    np.testing.assert_array_equal(_apply(net, params, x), plain)
    np.testing.assert_array_equal(_apply(net, params, x, k1), plain)
    with pytest.raises(ValueError, match="key"):
        net.apply(params, x, deterministic=False)
    with pytest.raises(ValueError, match="key"):
        WaveNet(4, 2).apply(_init(WaveNet(4, 2), k1, 4, jnp.float32), x, deterministic=False)
    y1 = _apply(net, params, x, k1, deterministic=False)
    assert not np.allclose(y1, plain)
    assert not np.allclose(y1, _apply(net, params, x, k2, deterministic=False))
    np.testing.assert_array_equal(y1, _apply(net, params, x, k1, deterministic=False))
    # Rate 0 with deterministic=False is still the identity.
    np.testing.assert_array_equal(_apply(TCN(8, 2, 3), params, x, k1, deterministic=False), plain)


def test_dropout_mask_rate_and_scale():
    # Inverted dropout: zero w.p. rate, survivors scaled by 1/(1-rate) (mean kept).
    z = jnp.ones((200, 500))
    out = np.asarray(convnets._dropout(jax.random.PRNGKey(0), z, 0.3))
    np.testing.assert_allclose(out[out != 0], 1 / 0.7, rtol=1e-6)
    assert abs((out == 0).mean() - 0.3) < 0.01


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def test_width_errors():
    tcn, wn = TCN(4, 2, 3), WaveNet(4, 2)
    p_tcn, p_wn = _init(tcn, jax.random.PRNGKey(0), 3, jnp.float32), _init(wn, jax.random.PRNGKey(0), 3, jnp.float32)
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
    params = _init(net, jax.random.PRNGKey(0), 3, jnp.float32)
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
    assert hash(TCN(4, 2, 3)) == hash(TCN(4, 2, 3))
    # The check has teeth: a new shape retraces and is caught.
    with pytest.raises(AssertionError, match="traced > 1"):
        f(params, jnp.zeros((2, 11, 3)))
    chex.clear_trace_counter()


# ---------------------------------------------------------------------------
# Property test over shapes
# ---------------------------------------------------------------------------


@st.composite
def _cases(draw):
    kind = draw(st.sampled_from(["tcn", "wavenet"]))
    levels = draw(st.integers(1, 3))
    k_size = draw(st.integers(1, 3))
    hidden = draw(st.integers(1, 4))
    if kind == "tcn":
        net = TCN(hidden, levels, k_size, conv_impl=draw(st.sampled_from(CONV_IMPLS)))
    else:
        net = WaveNet(hidden, levels, k_size, stacks=draw(st.integers(1, 2)),
                      conv_impl=draw(st.sampled_from(CONV_IMPLS)))
    lead = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    t_len = draw(st.integers(1, 12))
    d_in = draw(st.integers(1, 4))
    s = draw(st.integers(0, t_len - 1))
    return net, lead, t_len, d_in, s


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_cases())
def test_property_shapes_and_causality(case):
    net, lead, t_len, d_in, s = case
    with jax.enable_x64(True):
        params = _init(net, jax.random.PRNGKey(0), d_in)
        x = jax.random.normal(jax.random.PRNGKey(1), lead + (t_len, d_in), jnp.float64)
        y0 = np.asarray(_apply(net, params, x))
        y1 = np.asarray(_apply(net, params, x.at[..., s, :].add(1.0)))
    assert y0.shape == lead + (t_len, net.hidden_size)
    assert np.isfinite(y0).all()
    np.testing.assert_array_equal(y1[..., :s, :], y0[..., :s, :])
    np.testing.assert_array_equal(y1[..., s + net.receptive_field :, :], y0[..., s + net.receptive_field :, :])
