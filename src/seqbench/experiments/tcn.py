"""Bai, Kolter & Koltun (2018), Table 1: TCN vs LSTM / GRU / RNN.

Numbers from ``shared/docs/anchors.md`` §2 (paper Table 1). TCN settings: the
paper's Table 2 (read in a copy of the paper; anchors.md summarises only part
of it) gives, per task, kernel k, levels n, hidden width, dropout and gradient
clip: adding T=600 k8 n8 h24, dropout 0, no clip; (p)MNIST k7 n8 h25, dropout
0, no clip; copy T=1000 k8 n8 h10, dropout 0.05, clip 1, RMSprop 5e-4; JSB k3
n2 h150, dropout 0.5, clip 0.4; Nottingham k6 n4 h150, dropout 0.2, clip 0.4
(the music script's clip runs before backward: a no-op, so none here);
word PTB k3 n4 h600, embedding 600 (tied), dropout 0.5, clip 0.4; char PTB k3
n3 h450, embedding 100, dropout 0.1, clip 0.15. Rule: Table 2's values win;
what it leaves out (optimiser and lr, epochs, batch, lr rule, embedding
dropout, sequence lengths) comes from the task's script in locuslab/TCN, read
in each script -- the paper's general "Adam 2e-3 unless otherwise noted" is
overridden by the scripts' per-task choices, and each config's notes say where
script and Table 2 differ. Rows registered before 2026-11-29 took dropout and
clip from the scripts; they show as those overrides in reports. Table 2 says
all weights start N(0, 0.01); seqbench's TCN does that for its convolutions
(``convnets.TCN``), and the head follows each script's ``model.py``.

The recurrent baselines' code was never released (TCN issue #18; the paper
grid searched optimiser, lr, clip, dropout and forget bias). The paper's Table
3 publishes the LSTM's key settings -- layers, hidden, dropout, clip, initial
forget-gate bias and sometimes the optimiser -- and the LSTM rows take them
(:data:`LSTM_TABLE3`, since 2026-11-29; rows run before show as overrides).
What Table 3 leaves out, and everything of the GRU and tanh-RNN rows ("chosen
in a similar fashion", no table), is ours: the TCN's parameter count (Table 1
"Size") with one layer (word PTB: two layers of 600, so the GRU has 10.3M and
the tanh-RNN 7.5M parameters against ~13M), the TCN row's optimiser, and for
the word LMs the paper's "SGD, lr x0.5 when validation plateaus".

TCN rows use ``conv_impl="im2col"`` (fastest on GPU); on CPU
``--set conv_impl=lax_conv`` is faster (same numbers).
"""

from __future__ import annotations

import dataclasses

from seqbench.experiments.config import GPU_COST_UNMEASURED, Experiment, TrainConfig, options_tuple
from seqbench.models import ModelConfig

#: Where measured CPU costs of the GPU rows come from: capped runs (1 epoch x
#: 10 steps, one seed) extrapolated by scripts/estimate_full_run.py.
CAPPED_CPU_RUNS = "benchmarks/results/cpu/gpu-rows-throughput"

#: Training hours of one seed alone on the 2-core CPU, per task and model, as
#: ``CAPPED_CPU_RUNS``/estimate.json gives them (evaluation not included;
#: tests/test_experiments.py checks the two agree).
CPU_TRAINING_HOURS = {
    "smnist": {"tcn": 2.9, "lstm": 1.3, "gru": 1.2, "rnn": 1.0},
    "pmnist": {"tcn": 2.5, "lstm": 1.2, "gru": 1.1, "rnn": 0.9},
    "ptb-word": {"tcn": 16.6, "lstm": 3.8, "gru": 3.4, "rnn": 2.3},
    "ptb-char": {"tcn": 10.3, "lstm": 4.8, "gru": 5.1, "rnn": 4.3},
}

#: Published Table 1 in the units of seqbench's metrics (lower is better except
#: accuracy, which the paper gives in % and seqbench as a fraction).
PUBLISHED = {
    "smnist": {"lstm": 0.872, "gru": 0.962, "rnn": 0.215, "tcn": 0.990},
    "pmnist": {"lstm": 0.857, "gru": 0.873, "rnn": 0.253, "tcn": 0.972},
    "adding": {"lstm": 0.164, "gru": 5.3e-5, "rnn": 0.177, "tcn": 5.8e-5},
    "copy": {"lstm": 0.0204, "gru": 0.0197, "rnn": 0.0202, "tcn": 3.5e-5},
    "jsb": {"lstm": 8.45, "gru": 8.43, "rnn": 8.91, "tcn": 8.10},
    "nottingham": {"lstm": 3.29, "gru": 3.46, "rnn": 4.05, "tcn": 3.07},
    "ptb-word": {"lstm": 78.93, "gru": 92.48, "rnn": 114.50, "tcn": 88.68},
    "ptb-char": {"lstm": 1.36, "gru": 1.37, "rnn": 1.48, "tcn": 1.31},
}

#: Metric names, for titles.
_UNITS = {"smnist": "accuracy", "pmnist": "accuracy", "adding": "MSE",
          "copy": "cross-entropy", "jsb": "frame NLL", "nottingham": "frame NLL",
          "ptb-word": "perplexity", "ptb-char": "bpc"}

_NAMES = {"tcn": "TCN", "lstm": "LSTM", "gru": "GRU", "rnn": "tanh-RNN"}

# JSB and Nottingham share the poly_music script and so its settings, read in
# locuslab/TCN TCN/poly_music/music_test.py: Adam 1e-3, 100 epochs, one
# sequence per step, dropout 0.25, lr ÷10 when the valid loss exceeds the max of
# the previous 3 after epoch 10, best-valid model tested. Its clip (0.2) is
# called before backward(), on gradients just zeroed, so it clips nothing:
# clip 0 here.
_MUSIC_TRAIN = TrainConfig(optimizer="adam", lr=1e-3, clip=0.0, loss_reduction="sum", epochs=100,
                           batch_size=1, eval_batch_size=16, lr_schedule="jsb", lr_decay=10.0,
                           lr_decay_after=10)
_MUSIC_NOTES = ("NLL summed over frames as the objective; Adam 1e-3, 100 epochs, batch 1, lr "
                "÷10 when valid > max of the previous 3 after epoch 10 (poly_music/"
                "music_test.py). No clip: the script clips before backward(), on gradients "
                "just zeroed, so any --clip, Table 2's 0.4 included, was a no-op in the "
                "authors' runs. TCN dropout: Table 2's (JSB 0.5, Nottingham 0.2); until "
                "2026-11-29 the script's default 0.25. On JSB, 3 seeds with dropout 0.5 and "
                "a working clip 0.4 reached 8.90-8.96 (benchmarks/results/cpu/repro).")

# (P)MNIST, mnist_pixel/pmnist_test.py: Adam 2e-3, 20 epochs, lr ÷10 after every
# 10th epoch, clip -1 (none).
_MNIST_TRAIN = TrainConfig(optimizer="adam", lr=2e-3, clip=0.0, epochs=20, batch_size=64,
                           eval_batch_size=200, lr_schedule="step", lr_decay=10.0,
                           lr_step_epochs=10)

# Sequential and permuted MNIST share everything but the pixel order.
_PIXEL_MNIST = dict(
    options={},
    io=dict(input_kind="identity", input_size=1, output_size=10, readout="last"),
    # Table 2: dropout 0 (the script's default is 0.05).
    tcn=dict(hidden_size=25, levels=8, kernel_size=7, dropout=0.0),
    rnn_hidden={"lstm": 130, "gru": 150, "rnn": 260},
    train=_MNIST_TRAIN,
    cost_gpu="~15-30 min",
)

_NORMAL_HEAD_NOTE = (
    "TCN head weights N(0, 0.01^2), as the script's model.py (init_scheme=tcn_normal_head, "
    "registered 2026-11-29; rows before it used PyTorch's default head and show as "
    "model.init_scheme=pytorch).")

#: The paper's Table 3 ("LSTM parameter settings"), per task: model and train
#: overrides of the LSTM row, and what the table leaves open. "Bias" is the
#: initial forget-gate bias (one bias vector here; PyTorch's two would split
#: it); "-" there is taken as no forget bias.
LSTM_TABLE3 = {
    "adding": (dict(hidden_size=130, forget_bias=1.0), dict(clip=5.0),
               "1x130, dropout 0, clip 5, bias 1; no optimiser given (Adam 2e-3 kept)"),
    "copy": (dict(hidden_size=50, dropout=0.05, forget_bias=0.0), dict(),
             "1x50, dropout 0.05, clip 1, bias -; 'RMSprop/Adam' (RMSprop 5e-4 kept)"),
    "smnist": (dict(hidden_size=130, forget_bias=1.0),
               dict(optimizer="rmsprop", lr=1e-3, clip=1.0),
               "1x130, dropout 0, clip 1, bias 1, RMSprop 1e-3"),
    "pmnist": (dict(hidden_size=130, forget_bias=10.0),
               dict(optimizer="rmsprop", lr=1e-3, clip=1.0),
               "1x130, dropout 0, clip 1, bias 10, RMSprop 1e-3"),
    "jsb": (dict(hidden_size=200, layers=2, dropout=0.2, forget_bias=10.0), dict(clip=1.0),
            "2x200, dropout 0.2, clip 1, bias 10; 'SGD/Adam' (Adam 1e-3 kept)"),
    # Table 3 lists two Nottingham LSTMs (3x280 clip 0.5, 1x500 clip 1); 1x500
    # is ~1.2M parameters, nearer Table 1's 1M than 3x280's ~1.7M.
    "nottingham": (dict(hidden_size=500, dropout=0.1, forget_bias=0.0), dict(lr=4e-3, clip=1.0),
                   "1x500 (of its 3x280 / 1x500), dropout 0.1, clip 1, bias -, Adam 4e-3"),
    "ptb-word": (dict(hidden_size=700, layers=3, dropout=0.4, forget_bias=1.0),
                 dict(lr=30.0, clip=0.3),
                 "3x700, embedding 700 (tied), dropout 0.4, clip 0.3, bias 1, SGD 30"),
    "ptb-char": (dict(hidden_size=600, layers=2, dropout=0.1, embed_size=120, forget_bias=0.0),
                 dict(clip=0.5),
                 "2x600, embedding 120, dropout 0.1, clip 0.5, bias -; no optimiser given "
                 "(Adam 2e-3 kept)"),
}

#: Tasks whose cost string has the Table 3 LSTM's measured time.
_LSTM_TABLE3_TIMED = {"jsb", "copy", "nottingham"}

# Per task: input/head, TCN shape, recurrent hidden sizes (parameter-matched),
# the training settings, costs.
_TASKS = {
    "adding": dict(
        options={"length": 600},
        io=dict(input_kind="identity", input_size=2, output_size=1, readout="last"),
        tcn=dict(hidden_size=24, levels=8, kernel_size=8, init_scheme="tcn_normal_head"),
        rnn_hidden={"lstm": 130, "gru": 150, "rnn": 260},
        train=TrainConfig(optimizer="adam", lr=2e-3, clip=1.0, epochs=10, batch_size=32,
                          eval_batch_size=100),
        # Table 2: no clip; add_test.py: Adam 4e-3 (and no clip).
        tcn_train=dict(lr=4e-3, clip=0.0),
        cost_cpu=("one seed alone (measured): TCN 2,639 s, GRU 2,591 s, tanh-RNN 2,030 s, "
                  "LSTM ~50 min (~295 s an epoch)"), cost_gpu="~5 min",
        notes=("TCN: Adam 4e-3, no clip, dropout 0, epochs 10, batch 32 (Table 2 and "
               "adding_problem/add_test.py, read; before 2026-11-29 the row ran the paper's "
               "generic Adam 2e-3 with clip 1). The recurrent baselines keep Adam 2e-3, "
               "clip 1. " + _NORMAL_HEAD_NOTE),
    ),
    "copy": dict(
        options={"delay": 1000},
        io=dict(input_kind="scalar", input_size=10, output_size=10),
        tcn=dict(hidden_size=10, levels=8, kernel_size=8, dropout=0.05,
                 init_scheme="tcn_normal_head"),
        rnn_hidden={"lstm": 60, "gru": 70, "rnn": 120},
        train=TrainConfig(optimizer="rmsprop", lr=5e-4, clip=1.0, epochs=50, batch_size=32,
                          eval_batch_size=100),
        cost_cpu=("one seed alone (measured): TCN 4,500 s (PyTorch's default head), "
                  "tanh-RNN 1,386 s, GRU 1,818 s, LSTM (Table 3's 1x50) 1,196 s"),
        cost_gpu="~10 min",
        notes=("Symbols fed as one float channel, as the TCN code does; epochs 50, batch 32, "
               "10,000 training sequences (copy_memory/copymem_test.py). That script never "
               "zeroes its gradients (they accumulate over all steps) and defaults to "
               "dropout 0; seqbench zeroes them (--set train.zero_grad=false reproduces the "
               "script) and uses Table 2's dropout 0.05. " + _NORMAL_HEAD_NOTE),
    ),
    "smnist": dict(
        _PIXEL_MNIST,
        notes=("Adam 2e-3, 20 epochs, lr ÷10 after epoch 10, no clip, batch 64 "
               "(mnist_pixel/pmnist_test.py defaults); TCN dropout 0 (Table 2; the script's "
               "default is 0.05, registered until 2026-11-29). That script trains on all 60,000 "
               "images and prints test accuracy after each epoch; seqbench holds out 5,000 for "
               "validation and tests the best-valid model (the last-3-epoch mean is logged too)."),
    ),
    "pmnist": dict(
        _PIXEL_MNIST,
        notes="As smnist with seqbench's fixed seeded permutation (TCN's is unseeded).",
    ),
    "jsb": dict(
        options={},
        io=dict(input_kind="identity", input_size=88, output_size=88),
        tcn=dict(hidden_size=150, levels=2, kernel_size=3, dropout=0.5),
        rnn_hidden={"lstm": 230, "gru": 265, "rnn": 460},
        train=_MUSIC_TRAIN,
        cost_cpu=("one seed alone (measured, conv_impl=lax_conv for the TCN): TCN 42-51 s, "
                  "LSTM (Table 3's 2x200) 142-182 s, GRU/tanh-RNN 75-112 s; music seeds run "
                  "one at a time even with --vmap"), cost_gpu="~5-10 min",
        notes=_MUSIC_NOTES,
    ),
    "nottingham": dict(
        options={},
        io=dict(input_kind="identity", input_size=88, output_size=88),
        tcn=dict(hidden_size=150, levels=4, kernel_size=6, dropout=0.2),
        rnn_hidden={"lstm": 450, "gru": 530, "rnn": 950},
        train=_MUSIC_TRAIN,
        # TCN measured in benchmarks/results/cpu/repro on the 2-core CPU, where
        # vmapping 3 seeds (~34 s a seed-epoch) was slower than one seed at a time (~21 s).
        cost_cpu=("one seed alone (measured): TCN 900 s (Table 2's dropout 0.2, "
                  "conv_impl=lax_conv; 2,121 s at an earlier commit), tanh-RNN h=950 ~65 min, "
                  "GRU h=530 ~35 min, Table 3's 1x500 LSTM <56 min (3,378 s, with 6.5 min held for "
                  "CI and tests beside it)"),
        cost_gpu="~30 min",
        notes=_MUSIC_NOTES,
    ),
    "ptb-word": dict(
        options={},
        io=dict(input_kind="embed", input_size=10000, output_size=10000, embed_size=600,
                tie_weights=True),
        # Table 2's word-LM dropout cell reads "0.5 / 0.4" over PTB, Wiki-103 and
        # LAMBADA: 0.5 is taken for PTB (the script's default is 0.45).
        tcn=dict(hidden_size=600, levels=4, kernel_size=3, dropout=0.5, embed_dropout=0.25,
                 init_scheme="tcn_normal_head"),
        rnn_hidden={"lstm": 600, "gru": 600, "rnn": 600},
        rnn_extra=dict(layers=2, dropout=0.5),
        train=TrainConfig(optimizer="sgd", lr=4.0, clip=0.4, epochs=100, batch_size=16,
                          eval_batch_size=10, bptt=40, context=41, lr_schedule="jsb",
                          lr_decay=2.0, lr_decay_after=5, lr_decay_window=5),
        # §5.3: "SGD and anneal the learning rate by a factor of 0.5 for both TCN
        # and RNNs when validation accuracy plateaus".
        rnn_train=dict(lr=20.0, clip=0.25, epochs=40, batch_size=20, bptt=35, context=None,
                       lr_schedule="plateau", lr_decay=2.0),
        cost_gpu="~20-40 min",
        notes=("TCN: dropout 0.5 and clip 0.4 (Table 2; word_cnn_test.py: 0.45 and 0.35), "
               "seq_len 80 with the last 40 scored (context 41), SGD 4, "
               "lr ÷2 after epoch 5 when valid is not below the max of the last 5 "
               "(word_cnn/word_cnn_test.py; it ÷2 on >=, seqbench on >); embedding and tied "
               "decoder N(0, 0.01^2), as its model.py (init_scheme=tcn_normal_head). RNNs: 2 layers of "
               "600, tied, dropout 0.5, the word-LM recipe (SGD 20 ÷4, clip 0.25, BPTT 35)."),
    ),
    "ptb-char": dict(
        options={},
        io=dict(input_kind="embed", input_size=50, output_size=50, embed_size=100),
        # char_cnn's num_chans = [nhid] * (levels - 1) + [emsize]: the last level has
        # the embedding's 100 channels, and the decoder shares the embedding table.
        tcn=dict(hidden_size=450, levels=3, kernel_size=3, dropout=0.1, embed_dropout=0.1,
                 output_channels=100, tie_weights=True),
        rnn_hidden={"lstm": 800, "gru": 930, "rnn": 1600},
        # char_cnn evaluates valid and test as one stream (batch 1): one stream
        # start whose first characters see a short history, not ten. (It leaves
        # those first 80 characters unscored; seqbench scores every target.)
        train=TrainConfig(optimizer="sgd", lr=4.0, clip=0.15, epochs=100, batch_size=32,
                          eval_batch_size=1, bptt=320, context=81, lr_schedule="jsb",
                          lr_decay=10.0, lr_decay_after=5),
        rnn_train=dict(optimizer="adam", lr=2e-3, clip=0.25, epochs=40, bptt=150, context=None,
                       lr_schedule="plateau", lr_decay=4.0, eval_batch_size=10),
        cost_gpu="~20-40 min",
        notes=("TCN: seq_len 400 with the last 320 scored (context 81), emb 100, levels of "
               "450, 450 and 100 channels with the decoder tied to the embedding, SGD 4, "
               "clip 0.15, lr ÷10 after epoch 5 when valid is above the max of the last 3, "
               "valid and test evaluated as one stream (char_cnn/char_cnn_test.py, read). "
               "RNNs: 1 layer, Adam 2e-3, BPTT 150, evaluated in 10 streams. Not yet the "
               "authors' text: char_cnn reads PTB through the observations package, which "
               "returns the word-level ptb.*.txt with each newline replaced by '<eos>' "
               "(5.27M training characters, one space between words); the task reads "
               "Mikolov's ptb.char.*.txt (5.02M: '_' between words, one end-of-line a "
               "line). Their bpc is per character of that stream, so it is not directly "
               "comparable with ours."),
    ),
}


def experiment(task: str, backbone: str) -> Experiment:
  spec = _TASKS[task]
  io = dict(spec["io"])
  train = spec["train"]
  if backbone == "tcn":
    train = dataclasses.replace(train, **spec.get("tcn_train", {}))
    tcn = dict(spec["tcn"])
    if io.get("input_kind") == "embed" and io.get("tie_weights"):
      tcn["hidden_size"] = io["embed_size"]
    model = ModelConfig(backbone="tcn", **io, **tcn)
  else:
    fields = dict(spec.get("rnn_extra", {}), hidden_size=spec["rnn_hidden"][backbone],
                  forget_bias=1.0 if backbone == "lstm" else 0.0)
    train = dataclasses.replace(train, **spec.get("rnn_train", {}))
    if backbone == "lstm":
      lstm_model, lstm_train, _ = LSTM_TABLE3[task]
      fields.update(lstm_model)
      train = dataclasses.replace(train, **lstm_train)
    io.update({k: fields.pop(k) for k in ("embed_size",) if k in fields})
    if io.get("tie_weights"):
      io["embed_size"] = fields["hidden_size"]
    model = ModelConfig(backbone=backbone, **io, **fields)
  # The TCN scripts evaluate test after every epoch, and the paper's numbers are
  # the mean of the last 3 (anchors.md): log it (bookkeeping, not in run ids).
  train = dataclasses.replace(train, test_every_epoch=True)
  published = PUBLISHED[task][backbone]
  return Experiment(
      name=f"tcn-{task}-{backbone}",
      title=f"Bai et al. 2018 Table 1: {task}, {_NAMES[backbone]} ({_UNITS[task]})",
      task=task, model=model, train=train, task_options=options_tuple(spec["options"]),
      published=published,
      published_note=("Bai et al. 2018, Table 1" + (" (given there in %)"
                                                    if task in ("smnist", "pmnist") else "")),
      cost_cpu=_cpu_cost(spec, task, backbone), cost_gpu=spec["cost_gpu"] + GPU_COST_UNMEASURED, group="tcn-table1",
      notes=spec["notes"] + _baseline_note(task, backbone))


def _baseline_note(task: str, backbone: str) -> str:
  if backbone == "tcn":
    return ""
  if backbone == "lstm":
    return (f" LSTM: the paper's Table 3 ({LSTM_TABLE3[task][2]}); the rest ours "
            "(registered 2026-11-29; earlier rows used our one-layer, parameter-matched "
            "choice and show as overrides).")
  return " GRU/RNN settings are ours (the paper publishes only the LSTM's)."


def _cpu_cost(spec: dict, task: str, backbone: str) -> str:
  # Elsewhere the LSTM timings were measured for the one-layer baselines before Table 3.
  stale = (" (LSTM measured before its Table 3 settings)"
           if backbone == "lstm" and task not in _LSTM_TABLE3_TIMED else "")
  if task not in CPU_TRAINING_HOURS:
    return spec["cost_cpu"] + stale
  return (f"~{CPU_TRAINING_HOURS[task][backbone]:g} h of training, one seed alone "
          f"(measured rate of a capped run, {CAPPED_CPU_RUNS}; evaluation not included)"
          + stale)


def experiments() -> list[Experiment]:
  return [experiment(task, backbone)
          for task in _TASKS for backbone in ("tcn", "lstm", "gru", "rnn")]
