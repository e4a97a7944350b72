"""seqbench's word LM trains exactly like a PyTorch model of the authors' code.

``benchmarks/wikitext2_reference.py --same-init --no-dropout`` starts a
PyTorch model (``nn.Embedding`` -> clip -> ``nn.RNN``/``nn.LSTM`` stack ->
``nn.Linear``; mean cross-entropy, ``clip_grad_norm_``, plain SGD, the state
carried across BPTT windows) from seqbench's initial parameters and trains
both on the same Wikitext-2 batches: every step's loss and unclipped gradient
norm must agree. Needs torch (``pip install torch``; skipped without it).
"""

import importlib.util
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

_SCRIPT = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks",
                       "wikitext2_reference.py")


def _load_script():
  spec = importlib.util.spec_from_file_location("wikitext2_reference", _SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("experiment", ["mh-wikitext2-rnn-unstable", "mh-wikitext2-lstm-unstable"])
def test_same_init_runs_agree_step_by_step(tmp_path, experiment):
  script = _load_script()
  assert script.main(["--experiment", experiment, "--steps", "5", "--every", "5",
                      "--same-init", "--no-dropout", "--threads", "1",
                      "--set", "model.hidden_size=16", "--set", "model.embed_size=16",
                      "--out", str(tmp_path)]) == 0
  out = json.loads((tmp_path / "reference.json").read_text())
  assert out["same_init"] and len(out["seqbench_losses"]) == len(out["pytorch_losses"]) == 5
  # lr 20 with clip 0.25 moves the params far each step (the loss rises from
  # ln V): agreement over five such steps is not an accident of small updates.
  np.testing.assert_allclose(out["seqbench_losses"], out["pytorch_losses"], rtol=2e-4)
  np.testing.assert_allclose(out["seqbench_grad_norms"], out["pytorch_grad_norms"], rtol=2e-3)
  assert (tmp_path / "reference.md").read_text().startswith("# First 5 training steps")


def test_independent_inits_differ(tmp_path):
  """Without --same-init the models start from different draws (the check above is not vacuous)."""
  script = _load_script()
  assert script.main(["--steps", "1", "--every", "1", "--no-dropout", "--threads", "1",
                      "--set", "model.hidden_size=16", "--set", "model.embed_size=16",
                      "--out", str(tmp_path)]) == 0
  out = json.loads((tmp_path / "reference.json").read_text())
  assert not out["same_init"]
  assert abs(out["seqbench_grad_norms"][0] - out["pytorch_grad_norms"][0]) > 1e-3
