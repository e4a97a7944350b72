"""seqbench.models: shapes, executors inside the model, carry, dropout, projection."""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqbench import stability, unroll
from seqbench.models import Model, ModelConfig

KEY = jax.random.PRNGKey(0)


@functools.lru_cache(maxsize=None)
def _jitted(model, train):
  return jax.jit(lambda *a, **k: model.apply(*a, train=train, **k))


def _apply(model, *args, **kw):
  """``model.apply`` compiled once per (model, train) (eager dispatch is slow)."""
  train = kw.pop("train", False)
  return _jitted(model, train)(*args, **kw)


def _model(**kw):
  base = dict(backbone="lstm", input_kind="identity", input_size=3, output_size=5,
              hidden_size=8, layers=2)
  base.update(kw)
  return Model(ModelConfig(**base))


@pytest.mark.parametrize("kw,inputs,out_shape", [
    (dict(input_kind="embed", input_size=11, output_size=11, embed_size=6),
     np.zeros((2, 7), np.int32), (2, 7, 11)),
    (dict(input_kind="linear", input_size=4, embed_size=6), np.ones((2, 7, 4), np.float32),
     (2, 7, 5)),
    (dict(input_kind="scalar", input_size=10, output_size=10), np.ones((2, 7), np.int32),
     (2, 7, 10)),
    (dict(input_kind="onehot", input_size=10, output_size=10), np.ones((2, 7), np.int32),
     (2, 7, 10)),
    (dict(readout="last", output_size=1), np.ones((2, 7, 3), np.float32), (2, 1)),
    (dict(backbone="gru", layers=1), np.ones((2, 7, 3), np.float32), (2, 7, 5)),
    (dict(backbone="rnn", layers=3), np.ones((2, 7, 3), np.float32), (2, 7, 5)),
    (dict(backbone="lru", executor="parallel"), np.ones((2, 7, 3), np.float32), (2, 7, 5)),
    (dict(backbone="tcn", levels=2, kernel_size=3), np.ones((2, 7, 3), np.float32), (2, 7, 5)),
    (dict(backbone="wavenet", levels=2), np.ones((2, 7, 3), np.float32), (2, 7, 5)),
    (dict(input_kind="embed", input_size=11, output_size=11, embed_size=8, tie_weights=True),
     np.zeros((2, 7), np.int32), (2, 7, 11)),
])
def test_output_shapes(kw, inputs, out_shape):
  model = _model(**kw)
  params = model.init(KEY)
  out, carry = _apply(model, params, jnp.asarray(inputs))
  assert out.shape == out_shape
  assert (carry is not None) == model.config.carries_state
  if kw.get("tie_weights"):
    assert "w" not in params["head"]


def test_tcn_with_a_narrow_last_block_ties_its_head_to_the_embedding():
  # The TCN repository's character model: levels of hidden width, the last
  # one the embedding's width, the decoder the embedding table itself.
  model = _model(backbone="tcn", input_kind="embed", input_size=11, output_size=11,
                 embed_size=4, hidden_size=6, levels=2, kernel_size=2, output_channels=4,
                 tie_weights=True)
  params = model.init(KEY)
  assert "w" not in params["head"]
  ids = jnp.asarray([[1, 5, 2, 7]])
  logits, _ = _apply(model, params, ids)
  features = model.convnet.apply(params["backbone"], params["input"]["embedding"][ids])
  assert features.shape == (1, 4, 4)
  np.testing.assert_allclose(logits, features @ params["input"]["embedding"].T
                             + params["head"]["b"], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match=r"backbone's output width \(6\)"):
    _model(backbone="tcn", input_kind="embed", input_size=11, output_size=11, embed_size=4,
           hidden_size=6, levels=2, tie_weights=True)
  with pytest.raises(ValueError, match="output_channels is a TCN setting"):
    _model(backbone="lstm", output_channels=4)
  with pytest.raises(ValueError, match="output_size == input_size"):
    _model(backbone="tcn", input_kind="embed", input_size=11, output_size=9, embed_size=4,
           hidden_size=6, levels=2, output_channels=4, tie_weights=True)


def test_truncated_with_k_ge_T_equals_scan():
  scan = _model(backbone="lstm", layers=2)
  xs = jax.random.normal(jax.random.PRNGKey(1), (3, 9, 3))
  params = scan.init(KEY)
  y_scan, _ = _apply(scan, params, xs)
  for k in (9, 20):
    y_trunc, carry = _apply(scan.with_executor("truncated", k), params, xs)
    assert carry is None
    np.testing.assert_allclose(y_trunc, y_scan, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backbone,layers", [("rnn", 1), ("rnn", 3), ("lstm", 2)])
def test_truncated_model_matches_windows(backbone, layers):
  """y^k_t of the model = the (recurrent) model run from scratch on x_{t-k+1..t}.

  For a stack that is the whole stack restarted k steps back: exactly k
  inputs, not k per layer (Miller & Hardt, Sec. 3).
  """
  model = _model(backbone=backbone, layers=layers)
  xs = jax.random.normal(jax.random.PRNGKey(2), (2, 8, 3))
  params = model.init(KEY)
  k = 3
  y_k, _ = _apply(model.with_executor("truncated", k), params, xs)
  for t in range(8):
    window = xs[:, max(0, t - k + 1):t + 1]
    y_ref, _ = _apply(model, params, window)
    np.testing.assert_allclose(y_k[:, t], y_ref[:, -1], rtol=1e-5, atol=1e-6)
  # An input k steps back or more does not reach y^k_t.
  moved = xs.at[:, 2].add(5.0)
  y_moved, _ = _apply(model.with_executor("truncated", k), params, moved)
  np.testing.assert_array_equal(y_moved[:, 2 + k:], y_k[:, 2 + k:])
  assert not np.allclose(y_moved[:, 2 + k - 1], y_k[:, 2 + k - 1])


def test_truncated_stack_refuses_dropout_in_training():
  model = _model(backbone="rnn", layers=2, dropout=0.2, executor="truncated", k=2)
  params = model.init(KEY)
  with pytest.raises(ValueError, match="truncated stack of layers has no dropout"):
    model.apply(params, jnp.ones((1, 4, 3)), key=KEY, train=True)
  model.apply(params, jnp.ones((1, 4, 3)), train=False)  # evaluation has no dropout


def test_truncated_stack_reports_the_recurrent_layer_inputs():
  model = _model(backbone="lstm", layers=2)
  xs = jax.random.normal(jax.random.PRNGKey(4), (2, 6, 3))
  params = model.init(KEY)
  _, _, scan_inputs = model.features(params, xs, return_layers=True)
  _, _, trunc_inputs = model.with_executor("truncated", 2).features(params, xs,
                                                                    return_layers=True)
  assert len(trunc_inputs) == 2
  for a, b in zip(scan_inputs, trunc_inputs):
    np.testing.assert_array_equal(a, b)
  # Built by hand: the embedding, then the first layer run as the recurrent model.
  embedded = model.embed(params, xs)
  np.testing.assert_array_equal(trunc_inputs[0], embedded)
  np.testing.assert_allclose(trunc_inputs[1],
                             unroll.scan(model.cells[0], params["backbone"][0], embedded),
                             rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backbone,executor", [("lstm", "scan"), ("rnn", "scan"),
                                               ("gru", "scan"), ("lru", "parallel")])
def test_carry_across_windows_equals_one_pass(backbone, executor):
  model = _model(backbone=backbone, executor=executor, input_kind="embed", input_size=13,
                 output_size=13, embed_size=4)
  ids = jax.random.randint(jax.random.PRNGKey(3), (2, 10), 0, 13)
  params = model.init(KEY)
  full, _ = _apply(model, params, ids)
  first, carry = _apply(model, params, ids[:, :4])
  second, _ = _apply(model, params, ids[:, 4:], carry)
  np.testing.assert_allclose(jnp.concatenate([first, second], axis=1), full, rtol=2e-5,
                             atol=2e-5)


def test_parallel_equals_scan_for_lru():
  model = _model(backbone="lru", executor="parallel")
  xs = jax.random.normal(jax.random.PRNGKey(4), (2, 9, 3))
  params = model.init(KEY)
  a, _ = _apply(model, params, xs)
  b, _ = _apply(model.with_executor("scan"), params, xs)
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_dropout_only_in_training():
  model = _model(dropout=0.5)
  xs = jnp.ones((2, 5, 3))
  params = model.init(KEY)
  eval_a, _ = _apply(model, params, xs)
  eval_b, _ = _apply(model, params, xs, key=jax.random.PRNGKey(9))
  np.testing.assert_array_equal(eval_a, eval_b)
  tr_a, _ = _apply(model, params, xs, key=jax.random.PRNGKey(1), train=True)
  tr_b, _ = _apply(model, params, xs, key=jax.random.PRNGKey(2), train=True)
  assert not np.allclose(tr_a, tr_b)
  with pytest.raises(ValueError, match="key"):
    model.apply(params, xs, train=True)


def test_input_clip():
  model = _model(input_kind="linear", input_size=3, embed_size=4, input_clip=True)
  unclipped = _model(input_kind="linear", input_size=3, embed_size=4, input_clip=False)
  params = model.init(KEY)
  xs = 100 * jnp.ones((1, 2, 3))
  x, raw = model.embed(params, xs), unclipped.embed(params, xs)
  assert float(jnp.max(jnp.abs(raw))) > 1.0  # the clip has work to do
  np.testing.assert_array_equal(x, jnp.clip(raw, -1.0, 1.0))


@pytest.mark.parametrize("backbone", ["rnn", "lstm", "gru"])
def test_cells_tree_projects_every_layer(backbone):
  model = _model(backbone=backbone, layers=3, hidden_size=6)
  params = model.init(KEY)
  # Blow every layer up so that each one needs projecting.
  params = {**params, "backbone": [jax.tree_util.tree_map(lambda a: 5.0 * a, p)
                                   for p in params["backbone"]]}
  lam = 0.9
  projected = stability.project_tree(model.cells_tree(), params, lam)
  for cell, before, after in zip(model.cells, params["backbone"], projected["backbone"]):
    assert float(stability.lipschitz_bound(cell, before)) > lam
    assert float(stability.lipschitz_bound(cell, after)) <= lam * (1 + 1e-5)
  # Non-recurrent parts are untouched.
  np.testing.assert_array_equal(projected["head"]["w"], params["head"]["w"])


def test_conv_model_has_no_cells():
  model = _model(backbone="tcn", levels=2, kernel_size=2)
  assert model.cells == ()
  assert model.cells_tree()["backbone"] is None
  params = model.init(KEY)
  chex.assert_trees_all_equal(stability.project_tree(model.cells_tree(), params, 0.5), params)


@pytest.mark.parametrize("bad,message", [
    (dict(backbone="transformer"), "unknown backbone"),
    (dict(executor="truncated", k=0), "k >= 1"),
    (dict(input_kind="bytes"), "unknown input_kind"),
    (dict(readout="mean"), "unknown readout"),
    (dict(dropout=1.5), r"dropout must be in \[0, 1\)"),
    (dict(layers=0), "layers must be >= 1"),
    (dict(backbone="tcn", levels=0), "levels must be an integer >= 1"),
])
def test_bad_configs_raise(bad, message):
  with pytest.raises(ValueError, match=message):
    _model(**bad)


def test_parallel_needs_linear_cell():
  with pytest.raises(ValueError, match="linear"):
    _model(backbone="lstm", executor="parallel")


def test_config_is_hashable_and_frozen():
  cfg = ModelConfig(input_size=3, output_size=2)
  hash(cfg)
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.hidden_size = 3  # type: ignore[misc]


@pytest.mark.parametrize("backbone", ["rnn", "lstm"])
def test_mh_poly_music_init(backbone):
  """The authors' init_weights: bias[n/4:n/2] of both PyTorch bias vectors = 10; head U(±0.1), 0."""
  model = _model(backbone=backbone, layers=2, hidden_size=8, init_scheme="mh_poly_music")
  plain = _model(backbone=backbone, layers=2, hidden_size=8)
  params, ref = model.init(KEY), plain.init(KEY)
  for layer, ref_layer in zip(params["backbone"], ref["backbone"]):
    n = layer["bias"].shape[0]
    np.testing.assert_array_equal(layer["bias"][n // 4:n // 2], 20.0)
    np.testing.assert_array_equal(layer["bias"][:n // 4], ref_layer["bias"][:n // 4])
    np.testing.assert_array_equal(layer["bias"][n // 2:], ref_layer["bias"][n // 2:])
    np.testing.assert_array_equal(layer["recurrent_kernel"], ref_layer["recurrent_kernel"])
  assert float(jnp.max(jnp.abs(params["head"]["w"]))) <= 0.1
  np.testing.assert_array_equal(params["head"]["b"], 0.0)
  if backbone == "rnn":
    # A quarter of the units start (and, with small weights, stay) saturated.
    ys, _ = model.features(params, jax.random.normal(KEY, (1, 5, 3)))
    np.testing.assert_allclose(ys[..., 2:4], 1.0, atol=1e-6)


def test_tcn_normal_head_init():
  """locuslab/TCN's init_weights: head N(0, 0.01^2) (adding, copy); word_cnn's embedding too."""
  kw = dict(backbone="tcn", hidden_size=64, levels=2, kernel_size=2, layers=1)
  plain_cfg = dict(kw, input_kind="identity", input_size=3, output_size=400)
  params = _model(**plain_cfg, init_scheme="tcn_normal_head").init(KEY)
  ref = _model(**plain_cfg).init(KEY)
  w = np.asarray(params["head"]["w"])
  assert w.shape == (64, 400) and abs(w.std() - 0.01) < 0.0005 and abs(w.mean()) < 0.0005
  # The bias keeps nn.Linear's default draw (adding_problem/model.py leaves it alone).
  np.testing.assert_array_equal(params["head"]["b"], ref["head"]["b"])
  for a, b in zip(jax.tree_util.tree_leaves(params["backbone"]),
                  jax.tree_util.tree_leaves(ref["backbone"])):
    np.testing.assert_array_equal(a, b)
  # word_cnn: embedding N(0, 0.01^2), shared by the tied decoder, whose bias is zero.
  tied = dict(kw, input_kind="embed", input_size=2000, output_size=2000, embed_size=64,
              tie_weights=True)
  p = _model(**tied, init_scheme="tcn_normal_head").init(KEY)
  e = np.asarray(p["input"]["embedding"])
  assert abs(e.std() - 0.01) < 0.0005 and set(p["head"]) == {"b"}
  np.testing.assert_array_equal(p["head"]["b"], 0.0)
  untied = _model(**dict(tied, tie_weights=False), init_scheme="tcn_normal_head").init(KEY)
  assert abs(float(untied["head"]["w"].std()) - 0.01) < 0.0005
  np.testing.assert_array_equal(untied["head"]["b"], 0.0)


def test_tcn_rows_use_their_script_s_head_init():
  from seqbench.experiments import EXPERIMENTS
  scheme = {name: EXPERIMENTS[name].model.init_scheme
            for name in EXPERIMENTS if name.startswith("tcn-") and name.endswith("-tcn")}
  assert {n for n, s in scheme.items() if s == "tcn_normal_head"} == {
      "tcn-adding-tcn", "tcn-copy-tcn", "tcn-ptb-word-tcn"}
  assert all(EXPERIMENTS[n.replace("-tcn", "-lstm")].model.init_scheme == "pytorch"
             for n in scheme)


def test_init_scheme_is_checked():
  with pytest.raises(ValueError, match="unknown init_scheme"):
    _model(init_scheme="xavier")
  with pytest.raises(ValueError, match="defined for the RNN and LSTM"):
    _model(backbone="gru", init_scheme="mh_poly_music")


@pytest.mark.parametrize("backbone", ["lstm", "tcn", "wavenet"])
def test_training_without_dropout_needs_no_key(backbone):
  # Model.apply's contract: a key only when training with dropout > 0, for the
  # conv nets as for the cells (their own apply asked for one regardless).
  model = _model(backbone=backbone, dropout=0.0)
  params = model.init(KEY)
  x = jnp.ones((2, 7, 3))
  y_train, _ = model.apply(params, x, train=True)
  y_eval, _ = model.apply(params, x, train=False)
  np.testing.assert_array_equal(y_train, y_eval)
  if backbone == "tcn":
    with pytest.raises(ValueError, match="key"):  # with dropout it still asks for one
      _model(backbone=backbone, dropout=0.1).apply(params, x, train=True)

