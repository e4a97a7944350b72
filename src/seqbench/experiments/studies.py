"""Studies beyond the tables: truncation (inference and training) and the λ sweep.

Grids are data: a named base experiment plus a list of override dicts
(:class:`Grid`); every grid point is also registered as an experiment of its
own (``NAME`` = base name + suffix) so that ``seqbench train`` and sweeps can
run it.

* ``trunc-eval-{jsb,wikitext2}-{rnn,lstm}-{stable,unstable}`` (study a): train
  the Table 1 model, then evaluate the best checkpoint as the truncated model
  ``truncated(k)`` for k = 1, 2, 4, ..., 256 (``train.eval_ks``): metric vs k
  and the gap ``||y - y^k||`` vs k go to ``OUT/curves/RUN_ID.json``. The JSB
  studies here train 100 epochs (``miller_hardt.STUDY_EPOCHS``), where Table 1
  takes the authors' 500.
* ``trunc-train-jsb-{rnn,lstm}-{stable,unstable}-k{K}`` (study b): the same
  model *trained* as the truncated model at each k (training equivalence,
  paper.md §3); the best weights are evaluated as ``truncated(K)`` and with
  256 steps (the recurrent model for JSB), so the curves hold the gap.
* ``lam-jsb-{rnn,lstm}-lam{λ}``: the stability/performance frontier, the
  stable JSB model projected with λ in {0.5, 0.8, 0.9, 0.95, 0.99, 1.0}.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from seqbench.experiments import miller_hardt
from seqbench.experiments.config import GPU_COST_UNMEASURED, Experiment, apply_overrides

#: The window lengths of the truncation studies.
KS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
#: The λ sweep.
LAMS = (0.5, 0.8, 0.9, 0.95, 0.99, 1.0)


@dataclasses.dataclass(frozen=True)
class Grid:
  """A named base experiment and one override dict per grid point.

  Attributes:
    name: the grid's name (a prefix of its points' names).
    base: the base experiment.
    points: ``(suffix, overrides)`` pairs; point names are ``name + suffix``.
    title: one line.
  """

  name: str
  base: Experiment
  points: tuple
  title: str = ""

  def expand(self) -> list[Experiment]:
    out = []
    for suffix, overrides in self.points:
      exp = apply_overrides(self.base, dict(overrides))
      out.append(dataclasses.replace(exp, name=self.name + suffix,
                                     title=f"{self.title} [{suffix.lstrip('-')}]"))
    return out


def _variant(stable: bool) -> str:
  return "stable" if stable else "unstable"


def _jsb(backbone: str, stable: bool) -> Experiment:
  # The studies ran at 100 epochs, before the Table 1 rows took the authors' 500
  # (miller_hardt.STUDY_EPOCHS says why they stay there).
  # They also keep the input Linear the Table 1 rows dropped (miller_hardt.jsb).
  return miller_hardt.with_epochs(miller_hardt.jsb(backbone, stable, input_layer=True),
                                  miller_hardt.STUDY_EPOCHS)


def trunc_eval() -> list[Experiment]:
  out = []
  for make, task, cost_cpu, cost_gpu in (
      (_jsb, "jsb", "the Table 1 run at 100 epochs + ~5 min of truncated evaluation",
       "~10 min" + GPU_COST_UNMEASURED),
      (miller_hardt.wikitext2, "wikitext2", "days (the truncated test pass costs k x a scan)",
       "~10 min + the Table 1 run" + GPU_COST_UNMEASURED)):
    for backbone in ("rnn", "lstm"):
      for stable in (False, True):
        base = make(backbone, stable)
        out.append(dataclasses.replace(
            base, name=f"trunc-eval-{task}-{backbone}-{_variant(stable)}",
            title=(f"Truncation study (a): {base.title}, evaluated as truncated(k), "
                   f"k = 1..256"),
            train=dataclasses.replace(base.train, eval_ks=KS), group="trunc-eval",
            cost_cpu=cost_cpu, cost_gpu=cost_gpu,
            published=None, published_note="",
            notes=("Metric and ||y - y^k|| vs k for the best checkpoint; for the LM each "
                   "scored token gets exactly k inputs of context.")))
  return out


#: Study (b) on the 2-core CPU, 100 epochs (benchmarks/results/cpu/trunc-train): the RNN
#: as one vmapped group of stable + unstable x 3 seeds per k up to 8; the LSTM, and the
#: RNN at k = 16 (run after music seeds were split), as one stable + unstable pair per
#: seed. At batch 1 the step is latency bound, so the cost grows far slower than k up to
#: k = 8.
_TRUNC_TRAIN_CPU_COST = {
    "rnn": ("6 models vmapped: k=1 12 min, k=2 14 min, k=4 19 min, k=8 27 min (measured); "
            "k=16 as one pair per seed: 581-590 s a pair, 29 min for 3 seeds (measured)"),
    "lstm": ("k=1 ~45 min as 6 models vmapped (25 s/epoch alone, measured, sort-based "
             "projection). Since then (sort-free projection; music seeds as separate pairs), "
             "full runs alone took per stable/unstable pair 196-223 / 346-365 / 600-636 s at "
             "k = 2 / 4 / 8, and 1,353-1,467 s at k = 16 (measured), i.e. ~11 / ~18 / ~31 / ~70 min "
             "for 3 seeds"),
}


#: The λ sweep on the 2-core CPU: one seed, the 6 λ vmapped, 100 epochs
#: (benchmarks/results/cpu/lam-sweep, wall time of the group).
_LAM_CPU_COST = {
    "rnn": "~20-27 min for all 6 λ vmapped, one seed (1,186-1,632 s measured, 3 seeds)",
    "lstm": ("~9 min for all 6 λ vmapped, one seed (506-512 s measured at e0505a2; 2,288 s "
             "at 69e9a42 with tests sharing the CPU)"),
}


def _pytorch_init(exp: Experiment) -> Experiment:
  # The study grids ran (benchmarks/results/cpu/trunc-train, lam-sweep) before the
  # authors' poly_music init became the Table 1 rows' (models.INIT_SCHEMES); they
  # keep PyTorch's init, and so their run ids, and compare with scan runs of it.
  return dataclasses.replace(exp, model=dataclasses.replace(exp.model, init_scheme="pytorch"))


def grids() -> dict[str, Grid]:
  out = {}
  for backbone in ("rnn", "lstm"):
    for stable in (False, True):
      base = _pytorch_init(_jsb(backbone, stable))
      base = dataclasses.replace(base, group="trunc-train", published=None, published_note="",
                                 cost_cpu=_TRUNC_TRAIN_CPU_COST[backbone],
                                 cost_gpu="~10-20 min" + GPU_COST_UNMEASURED)
      name = f"trunc-train-jsb-{backbone}-{_variant(stable)}"
      out[name] = Grid(
          name=name, base=base,
          # eval_ks: the best weights are also evaluated with 256 steps of context,
          # which is the recurrent model for JSB (its longest sequence has 160
          # frames): the other half of training equivalence. It is bookkeeping,
          # so runs done without it keep their ids and are not redone.
          points=tuple((f"-k{k}", {"model.executor": "truncated", "model.k": k,
                                   "train.eval_ks": tuple(sorted({k, KS[-1]}))}) for k in KS),
          title=f"Truncation study (b): {base.title}, trained as truncated(k)")
    base = _pytorch_init(_jsb(backbone, True))
    base = dataclasses.replace(base, group="lam-sweep", published=None, published_note="",
                               cost_cpu=_LAM_CPU_COST[backbone],
                               cost_gpu="~10-20 min" + GPU_COST_UNMEASURED)
    name = f"lam-jsb-{backbone}"
    out[name] = Grid(
        name=name, base=base,
        points=tuple((f"-lam{lam:g}", {"train.lam": lam}) for lam in LAMS),
        title=f"λ sweep: {base.title}")
  return out


def experiments() -> list[Experiment]:
  out = trunc_eval()
  for grid in grids().values():
    out.extend(grid.expand())
  return out


def grid_overrides(grid: Grid) -> list[Mapping[str, Any]]:
  """The override dicts of a grid (data, for sweeps)."""
  return [dict(o) for _, o in grid.points]
