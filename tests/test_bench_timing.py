"""The timing method: compile and warm-up are not timed, retracing is caught."""

import jax
import jax.numpy as jnp
import pytest

from seqbench.bench import run_metadata, time_compiled
from seqbench.bench.timing import RetraceError, guarded_jit


class FakeClock:
  """A clock that advances 1 s per reading and records who read it."""

  def __init__(self):
    self.now = 0.0
    self.readings = 0

  def __call__(self):
    self.readings += 1
    self.now += 1.0
    return self.now


def test_fake_clock_counts_only_timed_calls():
  calls = []

  def f(x):
    calls.append("trace")
    return x * 2

  clock = FakeClock()
  timing = time_compiled(f, jnp.ones(3), n=7, warmup=3, clock=clock)
  # 3 readings around lower/compile, then 2 per timed call; warm-ups unread.
  assert clock.readings == 3 + 2 * 7
  assert timing.n == 7 and len(timing.times_ms) == 7
  assert timing.median_ms == pytest.approx(1000.0) and timing.min_ms == pytest.approx(1000.0)
  assert timing.lower_s == pytest.approx(1.0) and timing.compile_s == pytest.approx(1.0)
  assert calls == ["trace"] and timing.traces == 1


def test_compiled_function_runs_warmup_plus_n_times():
  executed = []

  def f(x):
    jax.debug.callback(lambda: executed.append(1))
    return x + 1

  time_compiled(f, jnp.ones(2), n=4, warmup=2)
  assert len(executed) == 6  # compile runs nothing; 2 warm-ups + 4 timed


def test_retrace_is_detected_in_a_python_loop():
  # The classic streaming bug: the first carry is a weak-typed Python float,
  # the next one a strong float32 array, so the second call re-traces.
  step = guarded_jit(lambda carry, x: carry * 0.5 + x)
  carry = step(1.0, jnp.ones(2, jnp.float32))
  with pytest.raises(RetraceError, match="traced 2 times"):
    step(carry[0], jnp.ones(2, jnp.float32))
  ok = guarded_jit(lambda c, x: c * 0.5 + x)
  c = jnp.zeros(2, jnp.float32)
  for _ in range(5):
    c = ok(c, jnp.ones(2, jnp.float32))
  assert ok.traces == 1


def test_flops_reported_for_a_matmul():
  t = time_compiled(lambda a, b: a @ b, jnp.ones((32, 16)), jnp.ones((16, 8)), n=2)
  if jax.default_backend() == "cpu":  # XLA:CPU implements cost_analysis; others may not
    assert t.flops is not None
  if t.flops is None:
    pytest.skip(f"no cost analysis on {jax.default_backend()}")
  assert t.flops == pytest.approx(2 * 32 * 16 * 8, rel=0.1)


def test_bad_n():
  with pytest.raises(ValueError, match="n must be"):
    time_compiled(lambda x: x, jnp.ones(1), n=0)


def test_metadata_has_the_fields_rows_need():
  meta = run_metadata("float32")
  for key in ("git_sha", "git_dirty", "versions", "device_kind", "platform", "dtype",
              "matmul_precision", "device_count"):
    assert key in meta
  assert meta["versions"]["jax"] == jax.__version__


def test_torch_lstm_packing_admits_bf16_only_while_packing():
  torch = pytest.importorskip("torch")
  from seqbench.bench import torch_baselines

  dtypes = torch.backends.cudnn.CUDNN_TENSOR_DTYPES
  before = set(dtypes)
  model = torch.nn.LSTM(4, 8, batch_first=True).to(torch.bfloat16)
  seen = []
  original = model.flatten_parameters
  model.flatten_parameters = lambda: (seen.append(torch.bfloat16 in dtypes), original())[1]
  torch_baselines._flatten_cudnn_weights(model, torch.bfloat16)
  assert seen == [True]           # bf16 counted as cuDNN-packable while packing...
  assert set(dtypes) == before    # ...and the global set left as it was
  y, _ = model(torch.zeros(2, 3, 4, dtype=torch.bfloat16))
  assert y.dtype == torch.bfloat16


def test_torch_inference_rows_run_the_lstm_in_eval_mode(monkeypatch):
  """cuDNN's LSTM runs its training forward whenever the module is in training mode."""
  torch = pytest.importorskip("torch")
  from seqbench.bench import torch_baselines

  seen = []
  original = torch.nn.LSTM.forward

  def spy(self, x, *args, **kwargs):
    seen.append((self.training, x.shape[1], x.is_contiguous()))
    return original(self, x, *args, **kwargs)

  monkeypatch.setattr(torch.nn.LSTM, "forward", spy)
  torch_baselines.lstm_rows(2, 5, 3, 4, "float32", n=1)
  modes = {(training, steps, contiguous) for training, steps, contiguous in seen}
  # train: training mode over 5 steps; forward: eval over 5; stream: eval, one contiguous step.
  assert modes == {(True, 5, True), (False, 5, True), (False, 1, True)}
