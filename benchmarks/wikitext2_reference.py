"""The first training steps of a Wikitext-2 row, seqbench vs a PyTorch reference.

Why: in the capped H200 sweeps the unstable tanh-RNN at the authors' settings
(SGD lr 20, clip 0.25) left its initial loss within 200 steps (train loss
15-18 against 10.4 at init) while the stable one improved. Whether that is
the setting or a seqbench bug decides whether the row is worth GPU time. This
trains, on the same training batches in the same order, for ``--steps``
optimizer steps:

* seqbench's own compiled train step for ``--experiment`` (one model, the
  trainer the sweep runs);
* an independent PyTorch model written from the description of the authors'
  code (``shared/docs/paper.md`` §4: the pytorch/examples word LM fork):
  ``nn.Embedding`` U(-0.1, 0.1), inputs clipped to [-1, 1], dropout, a
  ``nn.RNN``/``nn.LSTM`` stack with dropout between layers, dropout, a linear
  decoder U(-0.1, 0.1) with zero bias; mean cross-entropy; the hidden state
  carried across windows and detached; ``clip_grad_norm_`` then
  ``p -= lr * grad``. PyTorch's own default inits for the recurrent layers,
  or with ``--same-init`` seqbench's initial params (then, with
  ``--no-dropout``, the two runs agree step by step:
  ``tests/test_torch_reference.py``).

and prints the mean training loss of every ``--every`` steps for both, with
the gradient norm before clipping. ``--no-dropout`` turns dropout off in both
(isolates the optimisation from the dropout noise).

::

  python benchmarks/wikitext2_reference.py --experiment mh-wikitext2-rnn-unstable \\
      --steps 300 --out benchmarks/results/cpu/wikitext2-reference

Expected cost on the 2-core CPU: ~1 s per step for each model (the
33,278-word decoder dominates), ~10 minutes for 300 steps. Needs torch and
the Wikitext-2 data (``SEQBENCH_DATA`` or the vendored copy). Writes
``reference.{json,md}`` atomically with the run's provenance.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

import jax
import numpy as np

from seqbench import train as train_lib
from seqbench.experiments.config import parse_set_args
from seqbench.provenance import run_metadata, write_atomic


def _seqbench_losses(exp, batches, seed: int):
  """Per-step (loss, grad norm) of seqbench's compiled train step, and its initial params."""
  member = train_lib._Member(exp, seed, f"{exp.name}-{seed}")  # pylint: disable=protected-access
  losses, norms = [], []
  with tempfile.TemporaryDirectory() as tmp:
    trainer = train_lib._Trainer([member], tmp, batched=False, smoke=False,  # pylint: disable=protected-access
                                 progress=False, log=lambda msg: None)
    state = trainer._init_state()  # pylint: disable=protected-access
    init_params = jax.tree_util.tree_map(np.array, state["params"])
    grad_norm = _grad_norm_fn(trainer)
    for batch in batches:
      norms.append(float(grad_norm(state["params"], state["carry"], state["rng"],
                                   state["step"], batch)))
      state, loss = trainer._train_step(state, batch)  # pylint: disable=protected-access
      losses.append(float(loss))
      if not bool(state["alive"]):
        break
  return losses, norms, init_params


def _grad_norm_fn(trainer):
  """The unclipped gradient norm the trainer's step is about to see."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel

  model, task = trainer.model, trainer.task

  @jax.jit
  def norm(params, carry, rng, step, batch):
    key = jax.random.fold_in(rng, step)

    def loss_fn(p):
      out, _ = model.apply(p, batch["inputs"], carry, key=key, train=True)
      return task.loss(out, batch)

    with jax.numpy_dtype_promotion("standard"):
      return optax.tree.norm(jax.grad(loss_fn)(params)).astype(jnp.float32)

  return norm


def _torch_losses(exp, batches, seed: int, threads: int, init_params=None):
  """Per-step (loss, grad norm) of the PyTorch reference model.

  With ``init_params`` (seqbench's initial params) the model starts from them
  and the hidden-to-hidden biases are fixed at zero: PyTorch's RNNs have two
  bias vectors where seqbench's cells have one, so only then are the two
  models the same function of the same parameters.
  """
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel

  torch.manual_seed(seed)
  torch.set_num_threads(threads)
  c, t = exp.model, exp.train
  rnn_cls = {"rnn": lambda *a, **k: nn.RNN(*a, nonlinearity="tanh", **k),
             "lstm": nn.LSTM}[c.backbone]

  class WordLM(nn.Module):
    def __init__(self):
      super().__init__()
      self.embedding = nn.Embedding(c.input_size, c.embed_size)
      self.rnn = rnn_cls(c.embed_size, c.hidden_size, c.layers, dropout=c.dropout,
                         batch_first=True)
      self.decoder = nn.Linear(c.hidden_size, c.output_size)
      self.drop = nn.Dropout(c.dropout)
      nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
      nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
      nn.init.zeros_(self.decoder.bias)

    def forward(self, ids, hidden):
      x = self.embedding(ids)
      if c.input_clip:
        x = x.clamp(-1.0, 1.0)
      out, hidden = self.rnn(self.drop(x), hidden)
      return self.decoder(self.drop(out)), hidden

  model = WordLM()
  if init_params is not None:
    _load_seqbench_params(model, init_params, c.layers)
  model.train()
  hidden = None
  losses, norms = [], []
  for batch in batches:
    ids = torch.from_numpy(np.asarray(batch["inputs"], np.int64))
    targets = torch.from_numpy(np.asarray(batch["targets"], np.int64))
    if hidden is not None:
      hidden = tuple(h.detach() for h in hidden) if isinstance(hidden, tuple) else hidden.detach()
    model.zero_grad()
    logits, hidden = model(ids, hidden)
    loss = nn.functional.cross_entropy(logits.reshape(-1, c.output_size), targets.reshape(-1))
    loss.backward()
    norms.append(float(nn.utils.clip_grad_norm_(model.parameters(), t.clip)))
    with torch.no_grad():
      for p in model.parameters():
        if p.grad is not None:
          p.add_(p.grad, alpha=-t.lr)
    losses.append(loss.item())
    if not math.isfinite(losses[-1]):
      break
  return losses, norms


def _load_seqbench_params(model, params, layers: int) -> None:
  """Copy seqbench's ``{"input", "backbone", "head"}`` params into the PyTorch model."""
  import torch  # pylint: disable=import-outside-toplevel

  as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))
  with torch.no_grad():
    model.embedding.weight.copy_(as_t(params["input"]["embedding"]))
    for i in range(layers):
      layer = params["backbone"][i]
      getattr(model.rnn, f"weight_ih_l{i}").copy_(as_t(layer["input_kernel"].T))
      getattr(model.rnn, f"weight_hh_l{i}").copy_(as_t(layer["recurrent_kernel"].T))
      getattr(model.rnn, f"bias_ih_l{i}").copy_(as_t(layer["bias"]))
      bias_hh = getattr(model.rnn, f"bias_hh_l{i}")
      bias_hh.zero_()
      bias_hh.requires_grad_(False)
    model.decoder.weight.copy_(as_t(params["head"]["w"].T))
    model.decoder.bias.copy_(as_t(params["head"]["b"]))


def _summary(values, every: int) -> list:
  return [float(np.mean(values[i:i + every])) for i in range(0, len(values), every)]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--experiment", default="mh-wikitext2-rnn-unstable")
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--every", type=int, default=25, help="steps per printed mean")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--no-dropout", action="store_true", help="dropout 0 in both models")
  p.add_argument("--same-init", action="store_true",
                 help="start PyTorch from seqbench's initial params (one bias per layer); "
                      "with --no-dropout the two runs must then agree step by step")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="seqbench overrides, applied to both models where they read them")
  p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
  p.add_argument("--out", required=True, help="directory for reference.{json,md}")
  args = p.parse_args(argv)
  overrides = parse_set_args(list(args.set) + (["model.dropout=0"] if args.no_dropout else []))
  exp = train_lib.resolve(args.experiment, overrides)
  if exp.task not in ("wikitext2", "ptb-word") or not exp.model.is_recurrent:
    p.error(f"--experiment: {args.experiment!r} is not a recurrent word-LM experiment")
  task, model = train_lib.build(exp)
  data = train_lib._Data(task, exp, model)  # pylint: disable=protected-access
  batches = list(data.batches("train", train=True, limit=args.steps))

  t0 = time.perf_counter()
  jax_losses, jax_norms, init_params = _seqbench_losses(exp, batches, args.seed)
  jax_s = time.perf_counter() - t0
  print(f"seqbench: {len(jax_losses)} steps in {jax_s:.0f} s", flush=True)
  t0 = time.perf_counter()
  torch_losses, torch_norms = _torch_losses(exp, batches, args.seed, args.threads,
                                            init_params if args.same_init else None)
  torch_s = time.perf_counter() - t0
  print(f"pytorch:  {len(torch_losses)} steps in {torch_s:.0f} s", flush=True)

  import torch  # pylint: disable=import-outside-toplevel
  meta = run_metadata("float32")
  meta["versions"]["torch"] = torch.__version__
  command = " ".join(["wikitext2_reference.py"] + (argv if argv is not None else sys.argv[1:]))
  rows = []
  js, ts = _summary(jax_losses, args.every), _summary(torch_losses, args.every)
  jn, tn = _summary(jax_norms, args.every), _summary(torch_norms, args.every)
  for i in range(max(len(js), len(ts))):
    get = lambda xs: xs[i] if i < len(xs) else None
    rows.append({"first_step": i * args.every + 1, "last_step": (i + 1) * args.every,
                 "seqbench_loss": get(js), "pytorch_loss": get(ts),
                 "seqbench_grad_norm": get(jn), "pytorch_grad_norm": get(tn)})
  fmt = lambda v: "–" if v is None else f"{v:.3f}"
  lines = [f"# First {args.steps} training steps of `{args.experiment}`: seqbench vs PyTorch",
           "", f"Written by `{command}` on {meta['device_kind']} ({meta['platform']}), jax "
           f"{meta['versions']['jax']}, torch {torch.__version__}, git {meta['git_sha']} "
           f"(dirty={meta['git_dirty']}). Same training batches in the same order; "
           f"lr {exp.train.lr}, clip {exp.train.clip}, dropout {exp.model.dropout}; "
           + ("PyTorch starts from seqbench's initial params (one bias per layer); "
              if args.same_init else "independent initialisations; ") +
           f"mean training loss (nats) and mean gradient norm before clipping over each "
           f"block of {args.every} steps. Initial loss ln(V) = "
           f"{math.log(exp.model.output_size):.2f}.", "",
           "| steps | seqbench loss | PyTorch loss | seqbench grad norm | PyTorch grad norm |",
           "|---|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['first_step']}-{r['last_step']} | {fmt(r['seqbench_loss'])} | "
                 f"{fmt(r['pytorch_loss'])} | {fmt(r['seqbench_grad_norm'])} | "
                 f"{fmt(r['pytorch_grad_norm'])} |")
  table = "\n".join(lines) + "\n"
  print(table)
  os.makedirs(args.out, exist_ok=True)
  write_atomic(os.path.join(args.out, "reference.json"), json.dumps(
      {"command": command, "meta": meta, "experiment": args.experiment, "overrides": overrides,
       "same_init": args.same_init, "rows": rows,
       "seqbench_losses": jax_losses, "pytorch_losses": torch_losses,
       "seqbench_grad_norms": jax_norms, "pytorch_grad_norms": torch_norms,
       "seqbench_s": jax_s, "pytorch_s": torch_s}, indent=1))
  write_atomic(os.path.join(args.out, "reference.md"), table)
  return 0


if __name__ == "__main__":
  sys.exit(main())
