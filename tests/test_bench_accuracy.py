"""The accuracy half of `seqbench bench`: its runs exist, pair up, and tabulate."""

from seqbench import train
from seqbench.bench import accuracy as A


def test_every_group_resolves_and_pairs_share_shapes():
  for label, names, extra in A.GROUPS:
    overrides = {**A.COMMON, "train.epochs": "1", **extra}
    if not overrides["train.eval_ks"]:
      del overrides["train.eval_ks"]
    exps = [train.resolve(name, overrides) for name in names]
    assert all(e.model.hidden_size == 128 for e in exps), label
    assert all(e.task == "jsb" for e in exps), label
    if len(exps) == 2:  # trained together: only stability may differ
      a, b = exps[0].resolved_dict(), exps[1].resolved_dict()
      assert a["model"] == b["model"]
      diff = {k for k in a["train"] if a["train"][k] != b["train"][k]}
      assert diff <= {"stable", "lam"}, diff
      assert not exps[0].train.stable and exps[1].train.stable


def test_accuracy_table_shows_each_row_and_dashes_for_missing():
  rows = [
      {"label": "tanh-RNN scan (stable)", "seed": 0, "test_metric": 8.5, "valid_metric": 8.4,
       "test_metric_k4": 8.6, "test_metric_k16": 8.5, "tokens_per_s": 1234.4,
       "vmap_group_size": 2, "certified_bound": 1.0, "empirical_contraction": 0.7},
      {"label": "TCN", "seed": 0, "test_metric": 8.25, "valid_metric": None,
       "tokens_per_s": 999.0, "certified_bound": None, "empirical_contraction": None},
  ]
  lines = A.accuracy_table(rows).splitlines()
  assert len(lines) == 4
  assert "| tanh-RNN scan (stable) | 0 | 8.500 | 8.400 | 8.600 / 8.500 | 1,234 | 2 | 1.000 | 0.700 |" \
      == lines[2]
  assert lines[3].startswith("| TCN | 0 | 8.250 | – | – / – | 999 | – |")
