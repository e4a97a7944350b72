r"""Reports from results: ``seqbench report DIR... [--format md|latex] [--plots] [--out FILE_OR_DIR]``.

Every number in a report is computed here from the rows of
``DIR/results.jsonl`` and the curves in ``DIR/curves/RUN_ID.json``, never typed;
the only other input is each experiment's published number from the registry
(:data:`seqbench.experiments.EXPERIMENTS`). This module reads files only: it
trains and evaluates nothing.

* Several directories (the shards of a sweep) are merged; a ``run_id`` seen in
  more than one is counted once, and an error if its results differ
  (:func:`merge`).
* Rows are grouped by experiment and resolved configuration (the seed aside):
  one table row per group with the test metric's mean ± sample standard
  deviation (n - 1) over the non-diverged seeds and n, the published number,
  whether ours matches it (:func:`matches`; a seed that diverged makes it a
  no; smoke runs and runs with overrides other than
  :data:`IMPLEMENTATION_FIELDS` are not compared), the device and the mean
  wall time of the program that trained the run (shared by a vmapped group).
  The ``variant`` column names what differs from the registered experiment
  (``smoke``, overrides).
* Published tables in the papers' own layout (:data:`PAPER_TABLES`): one row
  per task, one column per model, each cell ours (n seeds) beside the
  published number and the verdict, from the groups run with the registered
  settings; a published row not in the results says so.
* Groups with truncation curves get a table of the test metric and the gap
  ``||y - y^k||`` (mean over seeds) per k (truncation study (a)).
* Models *trained* as ``truncated(k)`` (study (b)) get a table of the test
  metric per k, with the same configuration trained by ``scan`` beside them
  when the rows have it (:func:`training_truncation`).
* ``--plots`` writes PNGs (matplotlib): metric vs k; gap vs k on a log scale
  with the slope of the ``λ^k`` bound drawn (λ: the certified bound of the
  trained model, else the projection's λ; anchored at the smallest k, since
  the constant of the bound is not measured); the measured contraction and
  the certified bound over training when the per-epoch history has them;
  the test metric of the models trained truncated vs k (scan dashed); the
  λ frontier (test metric vs λ
  of stable runs, per task and model).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from typing import Any, Iterable, Mapping, Optional, Sequence

RESULTS_FILE = "results.jsonl"

#: Relative tolerance for loss-type metrics (perplexity, NLL, bpc, MSE, ...).
REL_TOL = 0.02
#: Absolute tolerance for accuracy (as a fraction: 0.5 points).
ACC_TOL = 0.005


class ReportError(ValueError):
  """Bad input to the report (missing directory, no rows)."""


# ---------------------------------------------------------------------------
# Reading.


def read_rows(path: str) -> list[dict]:
  """Complete rows of ``path/results.jsonl`` (or of the file ``path``).

  A torn line is skipped (a run killed while appending). So is a line that is
  not a result row (no ``experiment``), with a warning: it would otherwise
  become a table row named ``None``.
  """
  file = path if os.path.isfile(path) else os.path.join(path, RESULTS_FILE)
  if not os.path.exists(file):
    raise ReportError(f"no {RESULTS_FILE} in {path!r}")
  rows, foreign = [], 0
  with open(file, "rb") as f:
    for line in f:
      if not line.endswith(b"\n"):
        continue
      try:
        row = json.loads(line)
      except ValueError:
        continue
      if isinstance(row, dict) and row.get("experiment"):
        rows.append(row)
      elif line.strip():
        foreign += 1
  if foreign:
    print(f"seqbench report: {file}: {foreign} line(s) without an experiment skipped",
          file=sys.stderr)
  return rows


#: What makes two rows with one ``run_id`` the same result: a run id hashes
#: the experiment, its config and the seed, not the code or the machine.
_SAME_RESULT_FIELDS = ("test_metric", "valid_metric", "git_sha", "device_kind", "dtype")


def merge(dirs: Sequence[str]) -> list[dict]:
  """Rows of several directories; a run found in more than one is counted once.

  The shards of one sweep never share a run. The same ``run_id`` in two
  directories is either a copy of one result (kept once) or the same
  experiment, config and seed run twice -- by other code or on another
  machine -- which would count one seed twice: that raises, naming both, so
  the folders get reported apart.

  Each row gets ``_dir``: the directory it was read from (for its curves).

  Raises:
    ReportError: a run id with two different results.
  """
  seen: dict = {}
  out = []
  for d in dirs:
    base = d if os.path.isdir(d) else os.path.dirname(os.path.abspath(d))
    for row in read_rows(d):
      rid = row.get("run_id")
      if rid is not None and rid in seen:
        first = seen[rid]
        differ = [f for f in _SAME_RESULT_FIELDS if first.get(f) != row.get(f)]
        if differ:
          raise ReportError(
              f"run {rid} ({row.get('experiment')}, seed {row.get('seed')}) is in "
              f"{first['_dir']!r} and {base!r} with different "
              + ", ".join(f"{f} ({first.get(f)!r} vs {row.get(f)!r})" for f in differ)
              + ": the same seed run twice; report these folders separately")
        continue
      seen[rid] = {**row, "_dir": base}
      out.append(seen[rid])
  return out


def read_curves(row: Mapping[str, Any]) -> Optional[dict]:
  path = os.path.join(row.get("_dir", "."), "curves", f"{row.get('run_id')}.json")
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


# ---------------------------------------------------------------------------
# Numbers.


def mean_std(values: Sequence[float]) -> tuple[Optional[float], Optional[float]]:
  """Mean and sample standard deviation (n - 1); std is None for n < 2."""
  vals = [float(v) for v in values]
  if not vals:
    return None, None
  mean = math.fsum(vals) / len(vals)
  if len(vals) < 2:
    return mean, None
  var = math.fsum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
  return mean, math.sqrt(var)


def is_accuracy(metric_name: Optional[str]) -> bool:
  return bool(metric_name) and "acc" in metric_name.lower()


def matches(ours: Optional[float], published: Optional[float],
            metric_name: Optional[str]) -> Optional[str]:
  """``"yes"``, ``"no (better)"``, ``"no (worse)"``, or None without both numbers.

  Within 0.5 points (0.005 as a fraction) for accuracy, within 2% of the
  published number for every other (loss-type) metric.
  """
  if ours is None or published is None:
    return None
  if is_accuracy(metric_name):
    ok = abs(ours - published) <= ACC_TOL + 1e-12
    better = ours > published
  else:
    ok = abs(ours - published) <= REL_TOL * abs(published) + 1e-12
    better = ours < published
  if ok:
    return "yes"
  return "no (better)" if better else "no (worse)"


def _canon(x):
  return json.loads(json.dumps(x, sort_keys=True, default=str))


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flat(v, key + "."))
    else:
      out[key] = v
  return out


#: Train settings that only change what a run logs (``seqbench.train.BOOKKEEPING_FIELDS``;
#: a test keeps the two equal): runs that differ in them are the same variant.
BOOKKEEPING_FIELDS = ("eval_ks", "contraction_every", "test_every_epoch", "checkpoint_seconds")

#: Overrides that change how a number is computed, not which number: a run
#: with only these keeps its verdict (``conv_impl``: every form computes the
#: same convolution, tested against each other).
IMPLEMENTATION_FIELDS = ("conv_impl",)


#: ``seqbench.train.FIELDS_ADDED_LATER`` (a test keeps the two equal): a row
#: written before such a setting existed ran with its default.
FIELDS_ADDED_LATER = {"train": {"projection": "certified", "lr_decay_window": 3,
                                 "zero_grad": True},
                      "model": {"init_scheme": "pytorch", "output_channels": 0}}


#: ``seqbench.train._UNUSED_WHEN_UNSTABLE`` (a test keeps the two equal): an
#: unstable run never reads these, so its id, and its group here, take them at
#: these values whatever the row's config says.
UNUSED_WHEN_UNSTABLE = {"lam": 1.0, "projection": "certified"}


def _group_config(row: Mapping[str, Any]) -> dict:
  cfg = dict(row.get("config") or {})
  cfg.pop("vmap_group_size", None)
  for section, defaults in FIELDS_ADDED_LATER.items():
    if isinstance(cfg.get(section), Mapping):
      cfg[section] = {**defaults, **cfg[section]}
  if isinstance(cfg.get("train"), Mapping):
    cfg["train"] = {k: v for k, v in cfg["train"].items() if k not in BOOKKEEPING_FIELDS}
    if cfg["train"].get("stable") is False:
      cfg["train"].update(UNUSED_WHEN_UNSTABLE)
  return _canon(cfg)


def _experiments():
  """``seqbench.experiments`` (the registry), or None when it cannot be imported."""
  try:
    from seqbench import experiments  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return experiments


def _registered(name: str, smoke: bool):
  """(published, flat resolved config) of the registered experiment, or (None, None)."""
  experiments = _experiments()
  exp = None if experiments is None else experiments.EXPERIMENTS.get(name)
  if exp is None:
    return None, None
  ref = experiments.smoke(exp) if smoke else exp
  return exp.published, _flat(_canon(ref.resolved_dict()))


def _overrides(cfg: Mapping[str, Any], ref_flat: Optional[dict]) -> Optional[list[str]]:
  """Dotted keys where a row's config differs from its registered experiment (None: unknown)."""
  flat = _flat({k: v for k, v in cfg.items() if k != "smoke"})
  if ref_flat is None or not flat:  # unregistered, or a row without its config
    return None
  return [k for k in sorted(set(flat) | set(ref_flat)) if flat.get(k) != ref_flat.get(k)
          and k.split(".")[-1] not in BOOKKEEPING_FIELDS]


def _settings_parts(flat: Mapping[str, Any], keys: Sequence[str]) -> list[str]:
  """``["a=1", "b=2", ...]`` for the first 4 of ``keys`` (sorted), then "+N more"."""
  parts = [f"{k}={flat.get(k)}" for k in keys[:4]]
  return parts + ([f"+{len(keys) - 4} more"] if len(keys) > 4 else [])


def _variant(name: str, cfg: Mapping[str, Any], ref_flat: Optional[dict]) -> str:
  smoke = bool(cfg.get("smoke"))
  parts = ["smoke"] if smoke else []
  diff = _overrides(cfg, ref_flat)
  flat = _flat({k: v for k, v in cfg.items() if k != "smoke"})
  if diff is not None:
    parts += _settings_parts(flat, diff)
  elif name:
    parts.append("unregistered")
  return ", ".join(parts)


#: Verdict of a group that is not the published setup (smoke, or overrides
#: beyond :data:`IMPLEMENTATION_FIELDS`): not compared, not counted.
NOT_COMPARED = "n/a (not the published setup)"


def _verdict(g: "Group", cfg: Mapping[str, Any], ref_flat: Optional[dict]) -> Optional[str]:
  """The match verdict of a group (None: no published number to compare with)."""
  if g.published is None:
    return None
  diff = _overrides(cfg, ref_flat) or []
  if cfg.get("smoke") or any(k.split(".")[-1] not in IMPLEMENTATION_FIELDS for k in diff):
    return NOT_COMPARED
  if g.diverged:
    # A reproduction that loses seeds to divergence is not one, whatever the others got.
    return f"no ({g.diverged} of {len(g.rows)} seeds diverged)"
  missing = len(g.rows) - g.n
  if missing:
    # Nor one whose seeds end without a (finite) test number.
    return f"no ({missing} of {len(g.rows)} seeds without a test metric)"
  return matches(g.mean, g.published, g.metric_name)


@dataclasses.dataclass
class Group:
  """The runs of one experiment + configuration, and their summary numbers."""

  experiment: str
  task: str
  model: str
  executor: str
  k: Optional[int]
  stable: bool
  lam: Optional[float]
  metric_name: str
  variant: str
  rows: list
  n: int = 0
  diverged: int = 0
  mean: Optional[float] = None
  std: Optional[float] = None
  valid_mean: Optional[float] = None
  published: Optional[float] = None
  match: Optional[str] = None
  devices: str = ""
  wall_mean: Optional[float] = None
  group_size: int = 1
  contraction_mean: Optional[float] = None
  bound_max: Optional[float] = None
  seeds: tuple = ()


def summarize(rows: Sequence[Mapping[str, Any]], published=None) -> list[Group]:
  """Group rows (experiment + config) and compute every number the tables show.

  Args:
    rows: result rows.
    published: optional ``{experiment: number}``; default: the registry.
  """
  buckets: dict = {}
  for row in rows:
    key = (row.get("experiment"), json.dumps(_group_config(row), sort_keys=True))
    buckets.setdefault(key, []).append(row)
  groups = []
  for (name, _), rs in buckets.items():
    rs = sorted(rs, key=lambda r: (r.get("seed") is None, r.get("seed")))
    r0 = rs[0]
    cfg = _group_config(r0)
    pub, ref_flat = _registered(name, bool(cfg.get("smoke")))
    if published is not None:
      pub = published.get(name)
    ok = [r for r in rs if not r.get("diverged") and r.get("test_metric") is not None]
    mean, std = mean_std([r["test_metric"] for r in ok])
    vmean, _ = mean_std([r["valid_metric"] for r in ok if r.get("valid_metric") is not None])
    wall, _ = mean_std([r["wall_s"] for r in rs if r.get("wall_s") is not None])
    contr, _ = mean_std([r["empirical_contraction"] for r in ok
                         if r.get("empirical_contraction") is not None])
    bounds = [r["certified_bound"] for r in ok if r.get("certified_bound") is not None]
    devs = []
    for r in rs:
      d = f"{r.get('device_kind') or '?'}" + (f" x{r['device_count']}"
                                              if (r.get("device_count") or 1) > 1 else "")
      if d not in devs:
        devs.append(d)
    g = Group(experiment=name, task=r0.get("task"), model=r0.get("model"),
              executor=r0.get("executor"), k=r0.get("k"), stable=bool(r0.get("stable")),
              lam=r0.get("lam"), metric_name=r0.get("metric_name"),
              variant=_variant(name, cfg, ref_flat), rows=rs, n=len(ok),
              diverged=sum(1 for r in rs if r.get("diverged")), mean=mean, std=std,
              valid_mean=vmean, published=pub, devices=", ".join(devs), wall_mean=wall,
              group_size=max(int(r.get("config", {}).get("vmap_group_size") or 1) for r in rs),
              contraction_mean=contr, bound_max=max(bounds) if bounds else None,
              seeds=tuple(r.get("seed") for r in rs))
    g.match = _verdict(g, cfg, ref_flat)
    groups.append(g)
  groups.sort(key=lambda g: (g.experiment or "", g.variant))
  return groups


def fmt(x: Optional[float], digits: int = 4) -> str:
  """A number for a table: ``digits`` significant digits (at least 2 decimals >= 100)."""
  if x is None:
    return "–"
  x = float(x)
  if x != 0 and abs(x) >= 10 ** digits:
    return f"{x:.{digits - 1}e}"
  if x != 0 and abs(x) < 1e-3:
    return f"{x:.{digits - 1}e}"
  if abs(x) >= 100:
    return f"{x:.2f}"
  return f"{x:.{digits}g}"


def _mean_std_cell(mean, std, pm: str = "±") -> str:
  if mean is None:
    return "–"
  return fmt(mean) if std is None else f"{fmt(mean)} {pm} {fmt(std)}"


def ours_cell(g: Group, pm: str = "±") -> str:
  return _mean_std_cell(g.mean, g.std, pm)


def n_cell(g: Group) -> str:
  # Seeds left out of the mean: diverged ones, and any that finished without a test metric.
  missing = len(g.rows) - g.n - g.diverged
  return (f"{g.n}" + (f" (+{g.diverged} diverged)" if g.diverged else "")
          + (f" (+{missing} without a test metric)" if missing else ""))


def truncation_table(g: Group) -> list[dict]:
  """Per k: mean over seeds of the truncated test metric, gap mean and max gap."""
  per_k: dict = {}
  for r in g.rows:
    if r.get("diverged") or r.get("test_metric") is None:
      continue  # the main table leaves these seeds out; so does this one
    c = read_curves(r)
    for e in (c or {}).get("truncation") or []:
      per_k.setdefault(e["k"], []).append(e)
  out = []
  for k in sorted(per_k):
    es = per_k[k]
    out.append({
        "k": k, "n": len(es),
        "test_metric": mean_std([e["test_metric"] for e in es
                                 if e.get("test_metric") is not None])[0],
        "gap_mean": mean_std([e["gap_mean"] for e in es if e.get("gap_mean") is not None])[0],
        "gap_max": max([e["gap_max"] for e in es if e.get("gap_max") is not None], default=None),
    })
  return out


#: Epochs averaged by :func:`last_epochs_test`.
LAST_EPOCHS = 3


def last_epochs_test(g: Group, n: int = LAST_EPOCHS) -> Optional[dict]:
  """Bai et al.'s number: each run's test metric averaged over its last ``n`` epochs.

  The TCN paper reports the mean test loss of the last 3 epochs (its
  authors, locuslab/TCN issue #40; ``anchors.md``), not the best-valid
  model's. Runs log a per-epoch test metric with ``train.test_every_epoch``.

  Returns:
    ``mean``, ``std`` (over seeds), ``n`` and ``match`` (the verdict against
    the published number), or None when no run of the group logged it.
  """
  vals = []
  for r in g.rows:
    if r.get("diverged") or r.get("test_metric") is None:
      continue
    hist = (read_curves(r) or {}).get("history") or []
    tests = [e.get("test_metric") for e in hist[-n:]]
    if len(tests) == n and all(v is not None for v in tests):
      vals.append(sum(tests) / n)
  if not vals:
    return None
  mean, std = mean_std(vals)
  match = g.match if g.match in (None, NOT_COMPARED) or g.diverged else matches(
      mean, g.published, g.metric_name)
  return {"mean": mean, "std": std, "n": len(vals), "match": match}


def lr_cuts(g: Group) -> list[tuple[Any, list[int]]]:
  """Per run of a group, ``(seed, epochs at which the learning rate fell)``, from its curves.

  The papers' lr rules cut on a validation plateau, so a cut that comes before a
  run leaves its initial plateau leaves it there (the JSB and Nottingham seed
  spreads in benchmarks/results/cpu). Runs without a logged history are left out.
  """
  out = []
  for r in sorted(g.rows, key=lambda r: (r.get("seed") is None, r.get("seed"))):
    hist = (read_curves(r) or {}).get("history") or []
    # Each history entry holds the lr chosen after that epoch's validation.
    lrs = [(e.get("epoch"), e.get("lr")) for e in hist if e.get("lr") is not None]
    initial = ((r.get("config") or {}).get("train") or {}).get("lr")
    if lrs and initial is not None:
      lrs.insert(0, (0, initial))
    if lrs:
      out.append((r.get("seed"), [ep for (_, a), (ep, b) in zip(lrs, lrs[1:]) if b < a]))
  return out


def _cuts_cell(cuts: list[tuple[Any, list[int]]], shown: int = 3) -> str:
  def one(epochs):
    if not epochs:
      return "none"
    more = f" (+{len(epochs) - shown} more)" if len(epochs) > shown else ""
    return ", ".join(str(e) for e in epochs[:shown]) + more
  return "; ".join(f"seed {seed}: {one(epochs)}" for seed, epochs in cuts)


def _family_key(row: Mapping[str, Any]) -> str:
  """A row's configuration without the executor and k (what study (b) varies)."""
  cfg = _group_config(row)
  model = dict(cfg.get("model") or {})
  model.pop("executor", None)
  model.pop("k", None)
  return json.dumps({**cfg, "model": model}, sort_keys=True)


def training_truncation(groups: Sequence[Group]) -> list[dict]:
  """Truncation study (b): models *trained* as ``truncated(k)``, per k, beside the scan model.

  Groups whose runs trained a recurrent model with ``executor="truncated"``
  are gathered by their configuration apart from the executor and k (task,
  model, stable, λ and every training setting the same), one entry per k with
  the test metric's mean ± std over seeds; ``reference`` is the group of the
  same configuration trained with ``scan`` (full recurrence), when the merged
  rows have it (of several, the one with the most seeds). Miller & Hardt
  (2019, Sec. 3): for a stable model, training the truncated model reaches
  the recurrent model's solution as k grows.

  Returns:
    one dict per family: ``task``, ``model``, ``stable``, ``lam``,
    ``metric_name``, ``settings`` (where its configuration differs from the
    other families of the same task, model, stable and λ, e.g.
    ``train.epochs=100``; empty when it is the only one), ``points``
    (``k``, ``mean``, ``std``, ``n``, ``experiment``, ``by_seed``),
    ``reference`` (the same keys but ``k``) or
    None. A seed fixes the initial parameters and the data order, so
    ``by_seed`` pairs each truncated run with its recurrent twin.
  """
  families: dict = {}
  scans: dict = {}
  for g in groups:
    if not g.rows:
      continue
    key = _family_key(g.rows[0])
    if g.executor == "truncated" and g.k:
      families.setdefault(key, []).append(g)
    elif g.executor == "scan" and (key not in scans or g.n > scans[key].n):
      # Several experiments can share one configuration (a Table 1 row and its
      # truncation-study (a) twin): the one with the most seeds is the reference.
      scans[key] = g
  out = []
  settings = _family_settings(list(families))
  for key, gs in families.items():
    # One point per k: experiments sharing a configuration (e.g. a k=1 study
    # row and the authors'-layout row it equals) would list the same seeds twice.
    # Of several, the most seeds wins (later entries of the dict overwrite).
    by_k = {g.k: g for g in sorted(gs, key=lambda g: (g.n, g.experiment))}
    gs = sorted(by_k.values(), key=lambda g: g.k)
    ref = scans.get(key)
    out.append({
        "task": gs[0].task, "model": gs[0].model, "stable": gs[0].stable, "lam": gs[0].lam,
        "metric_name": gs[0].metric_name, "settings": settings[key],
        "points": [{"k": g.k, "mean": g.mean, "std": g.std, "n": g.n,
                    "experiment": g.experiment, "by_seed": _by_seed(g)} for g in gs],
        "reference": None if ref is None else {"mean": ref.mean, "std": ref.std, "n": ref.n,
                                               "experiment": ref.experiment,
                                               "by_seed": _by_seed(ref)},
    })
  out.sort(key=lambda f: (f["task"] or "", f["model"] or "", f["stable"], f["lam"] or 0.0,
                          f["settings"]))
  return out


def _frontier_key(row: Mapping[str, Any]) -> str:
  """A row's configuration without λ (what the λ sweep varies)."""
  cfg = _group_config(row)
  train = dict(cfg.get("train") or {})
  train.pop("lam", None)
  return json.dumps({**cfg, "train": train}, sort_keys=True)


def lambda_frontier(groups: Sequence[Group]) -> list[dict]:
  """The stability/performance frontier: stable groups' test metric vs λ.

  Groups are lines only when their configurations agree apart from λ (a
  truncated-trained or shorter run at λ = 1 is another line, not a point of
  this one); of several groups at one λ the one with the most seeds is kept,
  and a line needs two λ.

  Returns:
    one dict per line: ``task``, ``model``, ``metric_name``, ``settings``
    (what tells it apart from other lines of the same task and model, as in
    :func:`training_truncation`), ``points`` (``lam``, ``mean``, ``std``,
    ``n``, ``experiment``), sorted by λ.
  """
  lines: dict = {}
  for g in sorted(groups, key=lambda g: (g.n, g.experiment)):
    if g.stable and g.lam is not None and g.mean is not None and g.rows:
      lines.setdefault(_frontier_key(g.rows[0]), {})[g.lam] = g  # most seeds last
  lines = {key: by_lam for key, by_lam in lines.items() if len(by_lam) >= 2}
  settings = _family_settings(list(lines))
  out = []
  for key, by_lam in lines.items():
    gs = sorted(by_lam.values(), key=lambda g: g.lam)
    out.append({
        "task": gs[0].task, "model": gs[0].model, "metric_name": gs[0].metric_name,
        "settings": settings[key],
        "points": [{"lam": g.lam, "mean": g.mean, "std": g.std, "n": g.n,
                    "experiment": g.experiment} for g in gs]})
  out.sort(key=lambda f: (f["task"] or "", f["model"] or "", f["settings"]))
  return out


def _family_settings(keys: Sequence[str]) -> dict:
  """``{family key: "a=1, b=2"}``: the settings that tell apart families whose
  task, model, stable and λ agree (two runs of one study under different
  training setups would otherwise share a title)."""
  flat = {key: _flat(json.loads(key)) for key in keys}

  def head(f):
    return tuple(json.dumps(f.get(k), sort_keys=True)
                 for k in ("task", "model.backbone", "train.stable", "train.lam"))

  out = {}
  for key, f in flat.items():
    peers = [g for g in flat.values() if head(g) == head(f) and g is not f]
    differ = sorted({k for g in peers for k in set(f) | set(g) if f.get(k) != g.get(k)})
    out[key] = ", ".join(_settings_parts(f, differ))
  return out


def _by_seed(g: Group) -> dict:
  """``{seed: test metric}`` of a group's non-diverged runs (a seed fixes init and data order)."""
  return {r.get("seed"): r["test_metric"] for r in g.rows
          if not r.get("diverged") and r.get("test_metric") is not None}


def _seeds_cell(by_seed: Mapping[Any, float]) -> str:
  return " · ".join(f"s{s} {fmt(v)}" for s, v in by_seed.items())


def _family_title(f: Mapping[str, Any]) -> str:
  return (f"{f['task']} {f['model']}, {'stable' if f['stable'] else 'unstable'}"
          + (f" (λ={f['lam']:g})" if f["stable"] and f["lam"] is not None else "")
          + (f" [{f['settings']}]" if f.get("settings") else ""))


# ---------------------------------------------------------------------------
# Published tables in the papers' layout.


@dataclasses.dataclass(frozen=True)
class PaperTable:
  """A published table's layout: which registered experiment fills each cell.

  Attributes:
    title: the paper and table.
    registry_group: the experiments' ``group`` in the registry.
    tasks: the rows, in the paper's order (every task of ``registry_group``).
    name: experiment name of a cell, ``name.format(task=..., column=...)``.
    columns: ``(column, heading)`` pairs, in the paper's order.
  """

  title: str
  registry_group: str
  tasks: tuple
  name: str
  columns: tuple


#: The tables of the two papers seqbench reproduces.
PAPER_TABLES = (
    PaperTable("Miller & Hardt (2019), Table 1", "mh-table1", ("wikitext2", "ptb-char", "jsb"),
               "mh-{task}-{column}",
               (("rnn-unstable", "RNN unstable"), ("rnn-stable", "RNN stable"),
                ("lstm-unstable", "LSTM unstable"), ("lstm-stable", "LSTM stable"))),
    PaperTable("Bai et al. (2018), Table 1", "tcn-table1",
               ("smnist", "pmnist", "adding", "copy", "jsb", "nottingham", "ptb-word", "ptb-char"),
               "tcn-{task}-{column}",
               (("lstm", "LSTM"), ("gru", "GRU"), ("rnn", "tanh-RNN"), ("tcn", "TCN"))),
)


def paper_tables(groups: Sequence[Group], registry=None) -> list[dict]:
  """The :data:`PAPER_TABLES` that ``groups`` have at least one cell of.

  A cell holds the group of its experiment that ran with the registered
  settings (implementation choices such as ``conv_impl`` aside: the groups
  the main table compares with the published number), the one with most
  seeds if several did; ``None`` when none did.

  Returns:
    One dict per table: ``title``, ``headings``, and ``rows``, a list of
    ``{"task", "cells": [{"experiment", "published", "group"}, ...]}``.
  """
  if registry is None:
    experiments = _experiments()
    registry = {} if experiments is None else experiments.EXPERIMENTS
  compared = {}
  for g in groups:
    if g.published is None or g.match in (None, NOT_COMPARED):
      continue
    best = compared.get(g.experiment)
    if best is None or g.n > best.n:
      compared[g.experiment] = g
  out = []
  for t in PAPER_TABLES:
    rows = []
    for task in t.tasks:
      cells = []
      for column, _ in t.columns:
        name = t.name.format(task=task, column=column)
        exp = registry.get(name)
        cells.append(None if exp is None else
                     {"experiment": name, "published": exp.published, "group": compared.get(name)})
      rows.append({"task": task, "cells": cells})
    if any(c and c["group"] for r in rows for c in r["cells"]):
      out.append({"title": t.title, "headings": [h for _, h in t.columns], "rows": rows})
  return out


def paper_table_markdown(table: Mapping[str, Any]) -> list[str]:
  """The lines of one :func:`paper_tables` table as a markdown grid (no heading)."""
  def row(cells):
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

  return ([row(["task"] + table["headings"]), row(["---"] * (1 + len(table["headings"])))]
          + [row([r["task"]] + [_paper_cell(c) for c in r["cells"]]) for r in table["rows"]])


def _paper_cell(cell: Optional[Mapping[str, Any]]) -> str:
  if cell is None:
    return "–"
  g = cell["group"]
  if g is None:
    return f"not in these results (published {fmt(cell['published'])})"
  return f"{ours_cell(g)} ({g.n}) vs {fmt(cell['published'])}: {g.match}"


# ---------------------------------------------------------------------------
# Rendering.

_COLUMNS = ("experiment", "variant", "task", "model", "metric", "ours (mean ± std)", "n",
            "published", "match", "emp. contraction", "device", "wall s")


def _cells(g: Group, pm: str) -> list[str]:
  return [g.experiment, g.variant or "", g.task or "", g.model or "", g.metric_name or "",
          ours_cell(g, pm), n_cell(g), fmt(g.published), g.match or "–",
          fmt(g.contraction_mean), g.devices, _wall_cell(g)]


def _wall_cell(g: Group) -> str:
  # A vmapped group trains its models in one program: its wall time is shared by all of them.
  return fmt(g.wall_mean) + (f" (group of {g.group_size})" if g.group_size > 1 else "")


def _summary_lines(groups: Sequence[Group]) -> list[str]:
  comparable = [g for g in groups if g.match is not None and g.match != NOT_COMPARED]
  other = [g for g in groups if g.match == NOT_COMPARED]
  yes = [g for g in comparable if g.match == "yes"]
  no = [g for g in comparable if g.match != "yes"]
  lines = [f"{len(yes)} of {len(comparable)} rows with a published number match it "
           f"(within {REL_TOL:.0%} for loss-type metrics, {ACC_TOL * 100:g} points for "
           f"accuracy)."]
  if yes:
    lines.append("Match: " + ", ".join(f"{g.experiment}" + (f" [{g.variant}]" if g.variant
                                                             else "") for g in yes) + ".")
  if no:
    lines.append("No match: " + ", ".join(
        f"{g.experiment}" + (f" [{g.variant}]" if g.variant else "") + f" ({g.match})"
        for g in no) + ".")
  if other:
    lines.append("Not compared (not the published setup): " + ", ".join(
        f"{g.experiment} [{g.variant}]" for g in other) + ".")
  return lines


def render_markdown(groups: Sequence[Group], *, n_rows: int, dirs: Sequence[str],
                    plots: Sequence[str] = ()) -> str:
  def row(cells):
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

  out = ["# seqbench report", "",
         f"{n_rows} runs from {', '.join(dirs)}; test metric mean ± sample std over the "
         f"non-diverged seeds (n); wall s: training wall time of one run's program, which "
         f"a vmapped group of runs shares; every number is computed from results.jsonl and "
         f"curves/.",
         "", row(_COLUMNS), row(["---"] * len(_COLUMNS))]
  out += [row(_cells(g, "±")) for g in groups]
  out += [""] + _summary_lines(groups)
  for t in paper_tables(groups):
    out += ["", f"## {t['title']}", "",
            "Each cell: ours, mean ± std over seeds (n), vs the published number: the verdict. "
            "Only runs with the registered settings.", ""] + paper_table_markdown(t)
  for g in groups:
    tt = truncation_table(g)
    if not tt:
      continue
    out += ["", f"## Truncation: {g.experiment}" + (f" [{g.variant}]" if g.variant else ""), "",
            row(["k", f"test {g.metric_name} (mean)", "gap mean ‖y−y^k‖", "gap max", "n"]),
            row(["---"] * 5)]
    out += [row([e["k"], fmt(e["test_metric"]), fmt(e["gap_mean"]), fmt(e["gap_max"]), e["n"]])
            for e in tt]
  last = [(g, last_epochs_test(g)) for g in groups]
  last = [(g, e) for g, e in last if e]
  if last:
    out += ["", f"## Test metric of the last {LAST_EPOCHS} epochs (Bai et al.'s protocol)", "",
            f"Each run's test metric averaged over its last {LAST_EPOCHS} epochs, then mean ± "
            "std over seeds; the main table has the best-valid model's.", "",
            row(["experiment", "variant", "ours (mean ± std)", "n", "published", "match"]),
            row(["---"] * 6)]
    out += [row([g.experiment, g.variant or "", _mean_std_cell(e["mean"], e["std"]), e["n"],
                 fmt(g.published), e["match"] or "–"]) for g, e in last]
  for f in training_truncation(groups):
    out += ["", f"## Trained as truncated(k): {_family_title(f)}", "",
            row(["k", f"test {f['metric_name']} (mean ± std)", "n", "per seed", "experiment"]),
            row(["---"] * 5)]
    out += [row([p["k"], _mean_std_cell(p["mean"], p["std"]), p["n"], _seeds_cell(p["by_seed"]),
                 p["experiment"]]) for p in f["points"]]
    r = f["reference"]
    out.append(row(["scan (recurrent)", _mean_std_cell(r["mean"], r["std"]), r["n"],
                    _seeds_cell(r["by_seed"]), r["experiment"]]) if r else
               row(["scan (recurrent)", "not in these results", "–", "–", "–"]))
  cuts = [(g, lr_cuts(g)) for g in groups]
  cuts = [(g, c) for g, c in cuts if any(epochs for _, epochs in c)]
  if cuts:
    out += ["", "## Learning-rate cuts", "",
            "Epochs after which each run's lr rule lowered its learning rate (from curves/; "
            "the first few). A cut before a run has left its initial plateau often explains "
            "a seed far from the others.", "",
            row(["experiment", "variant", "epochs of the cuts, per seed"]), row(["---"] * 3)]
    out += [row([g.experiment, g.variant or "", _cuts_cell(c)]) for g, c in cuts]
  if plots:
    out += ["", "## Plots", ""] + [f"![{os.path.basename(p)}]({p})" for p in plots]
  return "\n".join(out) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
        "–": "--", "‖": r"$\|$", "−": "-", "λ": r"$\lambda$"}


def tex_escape(s: str) -> str:
  return "".join(_TEX.get(c, c) for c in str(s))


def render_latex(groups: Sequence[Group], *, n_rows: int, dirs: Sequence[str]) -> str:
  cols = [tex_escape(c).replace("±", r"$\pm$") for c in _COLUMNS]
  out = ["% Generated by `seqbench report` from " + ", ".join(dirs) + f" ({n_rows} runs).",
         "% Requires \\usepackage{booktabs}.",
         r"\begin{table}[t]", r"\centering", r"\scriptsize",
         r"\begin{tabular}{" + "l" * 5 + "r" * 3 + "l" + "r" + "l" + "r" + "}",
         r"\toprule", " & ".join(cols) + r" \\", r"\midrule"]
  for g in groups:
    cells = [tex_escape(c) for c in _cells(g, "±")]
    cells[5] = cells[5].replace("±", r"$\pm$")
    out.append(" & ".join(cells) + r" \\")
  out += [r"\bottomrule", r"\end{tabular}",
          r"\caption{Test metric, mean $\pm$ sample std over seeds (n). "
          + tex_escape(" ".join(_summary_lines(groups))) + "}",
          r"\end{table}"]
  for t in paper_tables(groups):
    out += ["", r"\begin{table}[t]", r"\centering", r"\scriptsize",
            r"\begin{tabular}{l" + "l" * len(t["headings"]) + "}", r"\toprule",
            " & ".join(["task"] + [tex_escape(h) for h in t["headings"]]) + r" \\", r"\midrule"]
    out += [" & ".join([tex_escape(r["task"])] + [tex_escape(_paper_cell(c)).replace("±", r"$\pm$")
                                                  for c in r["cells"]]) + r" \\"
            for r in t["rows"]]
    out += [r"\bottomrule", r"\end{tabular}",
            r"\caption{" + tex_escape(t["title"]) + r": ours, mean $\pm$ sample std over seeds "
            r"(n), vs the published number, with the registered settings only.}", r"\end{table}"]
  for g in groups:
    tt = truncation_table(g)
    if not tt:
      continue
    out += ["", r"\begin{table}[t]", r"\centering", r"\begin{tabular}{rrrrr}", r"\toprule",
            r"$k$ & test " + tex_escape(g.metric_name) + r" & mean $\|y-y^k\|$ & max "
            r"$\|y-y^k\|$ & n \\", r"\midrule"]
    out += [f"{e['k']} & {tex_escape(fmt(e['test_metric']))} & {tex_escape(fmt(e['gap_mean']))}"
            f" & {tex_escape(fmt(e['gap_max']))} & {e['n']} \\\\" for e in tt]
    out += [r"\bottomrule", r"\end{tabular}",
            r"\caption{Truncation: " + tex_escape(g.experiment) +
            (f" ({tex_escape(g.variant)})" if g.variant else "") + "}", r"\end{table}"]
  last = [(g, e) for g, e in ((g, last_epochs_test(g)) for g in groups) if e]
  if last:
    out += ["", r"\begin{table}[t]", r"\centering", r"\begin{tabular}{llrrl}", r"\toprule",
            r"experiment & variant & test, last " + str(LAST_EPOCHS) + r" epochs & n & match \\",
            r"\midrule"]
    out += [" & ".join([tex_escape(g.experiment), tex_escape(g.variant or ""),
                        tex_escape(_mean_std_cell(e["mean"], e["std"])).replace("±", r"$\pm$"),
                        str(e["n"]), tex_escape(e["match"] or "–")]) + r" \\"
            for g, e in last]
    out += [r"\bottomrule", r"\end{tabular}",
            r"\caption{Each run's test metric averaged over its last " + str(LAST_EPOCHS)
            + r" epochs (Bai et al.'s protocol), mean $\pm$ sample std over seeds.}",
            r"\end{table}"]
  for f in training_truncation(groups):
    pm = lambda m, sd: tex_escape(_mean_std_cell(m, sd)).replace("±", r"$\pm$")
    out += ["", r"\begin{table}[t]", r"\centering", r"\begin{tabular}{rrr}", r"\toprule",
            r"$k$ & test " + tex_escape(f["metric_name"]) + r" & n \\", r"\midrule"]
    out += [f"{p['k']} & {pm(p['mean'], p['std'])} & {p['n']} \\\\" for p in f["points"]]
    r = f["reference"]
    if r:
      out += [r"\midrule", f"scan & {pm(r['mean'], r['std'])} & {r['n']} \\\\"]
    out += [r"\bottomrule", r"\end{tabular}",
            r"\caption{Trained as truncated($k$): " + tex_escape(_family_title(f)) + "}",
            r"\end{table}"]
  return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------
# Plots.


def _slug(s: str) -> str:
  return "".join(c if c.isalnum() or c in "-." else "_" for c in s)


def group_label(g: Group) -> str:
  """A group's name in plot legends: the experiment, and its settings when not registered."""
  return g.experiment + (f" [{g.variant}]" if g.variant else "")


#: Legend entries (fontsize 6) a panel's height makes room for, per inch.
_LEGEND_ENTRIES_PER_INCH = 6
#: Inches between stacked panels: room for the x label of one, the title of the next.
_PANEL_GAP = 0.8


def _task_panels(plt, tasks: Sequence[str], entries: Sequence[int]):
  """A figure with one panel per task, stacked, each tall enough for its legend.

  Groups of different tasks share no axis (their metrics differ), and a
  report of a whole results folder holds dozens of series: one panel per task
  with the legend to its right keeps every curve and label readable.
  """
  heights = [max(2.8, n / _LEGEND_ENTRIES_PER_INCH) for n in entries]
  total = sum(heights) + _PANEL_GAP * (len(heights) + 1)
  fig, axes = plt.subplots(len(tasks), 1, figsize=(7, total), squeeze=False,
                           gridspec_kw={"height_ratios": heights})
  # hspace is in units of the mean panel height.
  fig.subplots_adjust(top=1 - 0.4 / total, bottom=_PANEL_GAP / total,
                      hspace=_PANEL_GAP * len(heights) / sum(heights))
  axes = list(axes[:, 0])
  for ax, task, n in zip(axes, tasks, entries):
    ax.set_title(str(task), fontsize=9, loc="left")
    if n > 10:  # the default cycle has 10 colours: two groups would share one
      ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)
  return fig, axes


def _legend_right(ax) -> None:
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


def _by_task(items, task_of):
  out: dict = {}
  for item in items:
    out.setdefault(task_of(item), []).append(item)
  return out


#: Every plot :func:`make_plots` can draw (each only when the rows have its data).
PLOT_NAMES = ("metric_vs_k.png", "gap_vs_k.png", "trained_truncated_vs_k.png",
              "contraction_over_training.png", "lambda_frontier.png")


def make_plots(groups: Sequence[Group], folder: str) -> list[str]:
  """PNG plots from rows and curves; returns the paths written (none without matplotlib).

  ``metric_vs_k``, ``gap_vs_k`` and ``contraction_over_training`` have one
  panel per task. A plot of :data:`PLOT_NAMES` that these rows no longer
  give is removed from ``folder``, so that a report never shows a stale one.
  """
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    return []
  os.makedirs(folder, exist_ok=True)
  written = []

  def save(fig, name):
    assert name in PLOT_NAMES, name
    path = os.path.join(folder, name)
    # "tight" grows the canvas to hold the legends drawn right of the axes;
    # written beside and renamed, so a killed report leaves no half a PNG.
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, path)
    plt.close(fig)
    written.append(path)

  trunc = [(g, truncation_table(g)) for g in groups]
  trunc = _by_task([(g, tt) for g, tt in trunc if tt], lambda item: item[0].task)
  if trunc:
    tasks = sorted(trunc, key=str)
    fig, axes = _task_panels(plt, tasks, [len(trunc[t]) for t in tasks])
    for ax, task in zip(axes, tasks):
      for g, tt in trunc[task]:
        pts = [(e["k"], e["test_metric"]) for e in tt if e["test_metric"] is not None]
        if pts:
          ax.plot(*zip(*pts), marker="o", label=group_label(g))
      ax.set_xscale("log", base=2)
      ax.set_xlabel("k")
      ax.set_ylabel(f"test {trunc[task][0][0].metric_name} of truncated(k)")
      _legend_right(ax)
    save(fig, "metric_vs_k.png")
    fig, axes = _task_panels(plt, tasks, [2 * len(trunc[t]) for t in tasks])
    for ax, task in zip(axes, tasks):
      for g, tt in trunc[task]:
        pts = [(e["k"], e["gap_mean"]) for e in tt if e["gap_mean"] and e["gap_mean"] > 0]
        if not pts:
          continue
        line, = ax.plot(*zip(*pts), marker="o", label=f"{group_label(g)} ‖y−y^k‖")
        lam = g.bound_max if g.bound_max is not None and g.bound_max < 1 else g.lam
        if lam is not None and 0 < lam < 1:
          k0, gap0 = pts[0]
          ks = [k for k, _ in pts]
          ax.plot(ks, [gap0 * lam ** (k - k0) for k in ks], ls="--", color=line.get_color(),
                  label=f"{group_label(g)}: λ^k slope, λ={lam:.4g}")
      ax.set_xscale("log", base=2)
      ax.set_yscale("log")
      ax.set_xlabel("k")
      ax.set_ylabel("mean ‖y − y^k‖ (test)")
      _legend_right(ax)
    save(fig, "gap_vs_k.png")
  study_b = training_truncation(groups)
  if study_b:
    fig, ax = plt.subplots(figsize=(6, 4))
    for f in study_b:
      pts = [p for p in f["points"] if p["mean"] is not None]
      if not pts:
        continue
      line = ax.errorbar([p["k"] for p in pts], [p["mean"] for p in pts],
                         yerr=[p["std"] or 0.0 for p in pts], marker="o", capsize=2,
                         label=_family_title(f))
      r = f["reference"]
      if r and r["mean"] is not None:
        ax.axhline(r["mean"], ls="--", color=line[0].get_color(),
                   label=f"{_family_title(f)}: scan")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (trained as truncated(k))")
    ax.set_ylabel(f"test {study_b[0]['metric_name']} (mean ± std)")
    _legend_right(ax)
    save(fig, "trained_truncated_vs_k.png")
  # Stability over training: per group, the mean over seeds of the measured
  # contraction (solid) and of the certified bound (dashed), epoch by epoch.
  series = []
  for g in groups:
    per_epoch: dict = {}
    # A diverged seed's history stops early: averaged in, the mean would jump there.
    for r in (r for r in g.rows if not r.get("diverged")):
      for h in (read_curves(r) or {}).get("history") or []:
        slot = per_epoch.setdefault(h["epoch"], ([], []))
        for j, key in enumerate(("empirical_contraction", "certified_bound")):
          if h.get(key) is not None and math.isfinite(h[key]):
            slot[j].append(h[key])
    lines = [sorted((e, sum(v[j]) / len(v[j])) for e, v in per_epoch.items() if v[j])
             for j in (0, 1)]
    if lines[0] or lines[1]:
      series.append((g.task, group_label(g), lines))
  series = _by_task(series, lambda item: item[0])
  if series:
    tasks = sorted(series, key=str)
    fig, axes = _task_panels(plt, tasks, [sum(bool(m) + bool(c) for _, _, (m, c) in series[t])
                                          for t in tasks])
    for ax, task in zip(axes, tasks):
      for _, label, (measured, certified) in series[task]:
        color = None
        if measured:
          line, = ax.plot(*zip(*measured), marker="o", ms=3, label=f"{label}: measured")
          color = line.get_color()
        if certified:
          ax.plot(*zip(*certified), ls="--", color=color, label=f"{label}: certified")
      ax.axhline(1.0, color="grey", lw=0.8)
      ax.set_yscale("log")
      ax.set_xlabel("epoch")
      ax.set_ylabel("contraction (mean over seeds)")
      _legend_right(ax)
    save(fig, "contraction_over_training.png")
  frontier = lambda_frontier(groups)
  if frontier:
    fig, ax = plt.subplots(figsize=(6, 4))
    for line in frontier:
      pts = line["points"]
      ax.errorbar([p["lam"] for p in pts], [p["mean"] for p in pts],
                  yerr=[p["std"] or 0.0 for p in pts], marker="o", capsize=2,
                  label=f"{line['task']} {line['model']}"
                  + (f" [{line['settings']}]" if line["settings"] else ""))
    ax.set_xlabel("λ")
    ax.set_ylabel("test metric (mean ± std)")
    _legend_right(ax)
    save(fig, "lambda_frontier.png")
  for name in PLOT_NAMES:
    path = os.path.join(folder, name)
    if path not in written and os.path.exists(path):
      os.remove(path)
  return written


# ---------------------------------------------------------------------------
# Command line.


class _ArgumentParser(argparse.ArgumentParser):

  def error(self, message):
    raise ReportError(message)


def report_main(argv=None) -> int:
  """``seqbench report DIR... [--format md|latex] [--plots] [--out FILE_OR_DIR]``."""
  parser = _ArgumentParser(prog="seqbench report",
                           description="Tables (and plots) from sweep results.")
  parser.add_argument("dirs", nargs="+", metavar="DIR",
                      help="directories with results.jsonl (shards are merged)")
  parser.add_argument("--format", choices=("md", "latex"), default="md")
  parser.add_argument("--plots", action="store_true", help="PNG plots (needs --out)")
  parser.add_argument("--out", default=None,
                      help="a file (report only) or a directory (report.md|tex + plots); "
                           "default: print the report")
  try:
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    for d in args.dirs:
      if not os.path.exists(d):
        raise ReportError(f"no such directory {d!r}")
    rows = merge(args.dirs)
    if not rows:
      raise ReportError(f"no result rows in {', '.join(args.dirs)}")
    if args.plots and not args.out:
      raise ReportError("--plots needs --out DIR")
  except ReportError as e:
    print(f"seqbench report: {e}", file=sys.stderr)
    return 2
  groups = summarize(rows)
  out_file, plot_dir = None, None
  if args.out:
    is_dir = os.path.isdir(args.out) or not os.path.splitext(args.out)[1]
    name = "report.md" if args.format == "md" else "report.tex"
    out_file = os.path.join(args.out, name) if is_dir else args.out
    plot_dir = os.path.join(os.path.dirname(os.path.abspath(out_file)), "plots")
    from seqbench.provenance import OutputDirError, make_output_dir  # pylint: disable=g-import-not-at-top
    try:  # before any plot is drawn: a bad --out is one line, and nothing is written
      make_output_dir(os.path.dirname(os.path.abspath(out_file)))
    except OutputDirError as e:
      print(f"seqbench report: {e}", file=sys.stderr)
      return 2
  plots = make_plots(groups, plot_dir) if args.plots else []
  if args.format == "md":
    rel = [os.path.relpath(p, os.path.dirname(os.path.abspath(out_file))) for p in plots]
    text = render_markdown(groups, n_rows=len(rows), dirs=args.dirs, plots=rel)
  else:
    text = render_latex(groups, n_rows=len(rows), dirs=args.dirs)
  if out_file:
    from seqbench.provenance import write_atomic  # pylint: disable=g-import-not-at-top
    write_atomic(out_file, text)
    print(f"seqbench report: {len(groups)} table rows from {len(rows)} runs -> {out_file}"
          + (f" (+{len(plots)} plots in {plot_dir})" if plots else ""))
  else:
    sys.stdout.write(text)
  return 0


__all__ = ["read_rows", "merge", "summarize", "matches", "mean_std", "fmt", "render_markdown",
           "training_truncation", "lambda_frontier", "paper_tables", "paper_table_markdown", "PAPER_TABLES", "PaperTable",
           "render_latex", "make_plots", "report_main", "Group", "ReportError"]


if __name__ == "__main__":
  sys.exit(report_main(sys.argv[1:]))
