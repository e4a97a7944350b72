"""PyTorch baselines timed in the same run as seqbench: cuDNN LSTM and a TCN.

Only imported when ``torch`` is importable (``pip install seqbench[torch]``).
The TCN is written here with the block of Bai et al. (2018): two weight-normed
dilated ``Conv1d`` (padding then "chomp" of the right side, which makes them
causal) with ReLU, a 1x1 residual conv where widths differ, dilation 2**level.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Optional

import torch
from torch import nn


def device() -> torch.device:
  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_kind() -> str:
  if torch.cuda.is_available():
    return torch.cuda.get_device_name(0)
  return "cpu"


def _sync():
  if torch.cuda.is_available():
    torch.cuda.synchronize()


def matmul_precision() -> str:
  """What "float32" means for torch here (TF32 on NVIDIA when allowed)."""
  if not torch.cuda.is_available():
    return "float32"
  tf32_mm = torch.backends.cuda.matmul.allow_tf32
  tf32_cudnn = torch.backends.cudnn.allow_tf32
  return f"matmul_tf32={tf32_mm}, cudnn_tf32={tf32_cudnn}"


def time_torch(fn: Callable[[], None], n: int = 10, warmup: int = 2,
               clock: Callable[[], float] = time.perf_counter) -> dict:
  """Median/min milliseconds of ``fn()`` with device synchronisation."""
  for _ in range(warmup):
    fn()
  _sync()
  times = []
  for _ in range(n):
    start = clock()
    fn()
    _sync()
    times.append((clock() - start) * 1e3)
  return {"median_ms": statistics.median(times), "min_ms": min(times), "n": n,
          "times_ms": tuple(times), "compile_s": 0.0}


class _Chomp(nn.Module):

  def __init__(self, size: int):
    super().__init__()
    self.size = size

  def forward(self, x):
    return x[:, :, :-self.size] if self.size else x


class _TemporalBlock(nn.Module):

  def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int):
    super().__init__()
    pad = (kernel_size - 1) * dilation
    wn = nn.utils.parametrizations.weight_norm
    self.net = nn.Sequential(
        wn(nn.Conv1d(c_in, c_out, kernel_size, padding=pad, dilation=dilation)), _Chomp(pad),
        nn.ReLU(),
        wn(nn.Conv1d(c_out, c_out, kernel_size, padding=pad, dilation=dilation)), _Chomp(pad),
        nn.ReLU())
    self.down = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else None

  def forward(self, x):
    res = x if self.down is None else self.down(x)
    return torch.relu(self.net(x) + res)


class TorchTCN(nn.Module):
  """(B, T, D) -> (B, T, H), channels-first inside as PyTorch's Conv1d wants."""

  def __init__(self, input_size: int, hidden_size: int, levels: int, kernel_size: int):
    super().__init__()
    blocks = [_TemporalBlock(input_size if i == 0 else hidden_size, hidden_size, kernel_size, 2**i)
              for i in range(levels)]
    self.net = nn.Sequential(*blocks)

  def forward(self, x):
    return self.net(x.transpose(1, 2)).transpose(1, 2)


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _flatten_cudnn_weights(model, dt) -> None:
  """Packs an LSTM's weights into cuDNN's one contiguous buffer.

  ``.to()`` can leave them apart, and cuDNN then re-packs them on every call
  (its "not part of single contiguous chunk" warning). ``flatten_parameters``
  only packs dtypes in ``torch.backends.cudnn.CUDNN_TENSOR_DTYPES``, which in
  torch 2.x lacks bfloat16 although cuDNN's RNN runs it: the bf16 baseline
  would pay the re-packing in every timed call (seen on an H200,
  benchmarks/results/nvidia-h200/full_bf16_partial_05d8e37). So bf16 is
  admitted for the packing alone and the set restored after.
  """
  dtypes = getattr(torch.backends.cudnn, "CUDNN_TENSOR_DTYPES", None)
  added = dtypes is not None and dt not in dtypes
  if added:
    dtypes.add(dt)
  try:
    model.flatten_parameters()
  finally:
    if added:
      dtypes.discard(dt)


def lstm_rows(batch: int, time_len: int, input_size: int, hidden: int, dtype: str,
              n: int, modes=("train", "forward", "stream")) -> dict:
  """``torch.nn.LSTM`` (cuDNN on GPU): train step with Adam, forward, one step."""
  dev, dt = device(), _DTYPES[dtype]
  torch.manual_seed(0)
  model = nn.LSTM(input_size, hidden, batch_first=True).to(dev, dt)
  _flatten_cudnn_weights(model, dt)
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)
  x = torch.randn(batch, time_len, input_size, device=dev, dtype=dt)
  out = {}

  def train():
    opt.zero_grad(set_to_none=True)
    y, _ = model(x)
    y.float().pow(2).mean().backward()
    opt.step()

  def forward():
    with torch.no_grad():
      model(x)

  # Contiguous: a strided slice makes cuDNN copy the input in every timed call.
  x1 = x[:, :1].contiguous()
  state = (torch.zeros(1, batch, hidden, device=dev, dtype=dt),
           torch.zeros(1, batch, hidden, device=dev, dtype=dt))

  def stream():
    with torch.no_grad():
      model(x1, state)

  for mode, fn in (("train", train), ("forward", forward), ("stream", stream)):
    if mode in modes:
      # Inference rows in eval mode: nn.LSTM passes `training` to cuDNN, which
      # otherwise runs its training forward (a reserve buffer of every step's
      # activations for a backward that never comes), even under no_grad.
      model.train(mode == "train")
      out[mode] = time_torch(fn, n=n)
  return out


def tcn_rows(batch: int, time_len: int, input_size: int, hidden: int, levels: int,
             kernel_size: int, dtype: str, n: int, modes=("train", "forward")) -> dict:
  """The PyTorch TCN of the same shape, timed per mode.

  Modes: ``train`` (fwd + bwd + Adam step), ``fwd+bwd`` (gradients only, the
  performance anchors' "training-style pass"), ``forward`` (no grad).
  """
  dev, dt = device(), _DTYPES[dtype]
  torch.manual_seed(0)
  model = TorchTCN(input_size, hidden, levels, kernel_size).to(dev, dt)
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)
  x = torch.randn(batch, time_len, input_size, device=dev, dtype=dt)
  out = {}

  def train():
    opt.zero_grad(set_to_none=True)
    model(x).float().pow(2).mean().backward()
    opt.step()

  def fwd_bwd():
    model.zero_grad(set_to_none=True)
    model(x).float().pow(2).mean().backward()

  def forward():
    with torch.no_grad():
      model(x)

  for mode, fn in (("train", train), ("fwd+bwd", fwd_bwd), ("forward", forward)):
    if mode in modes:
      model.train(mode != "forward")  # no dropout here, but the modes say what they time
      out[mode] = time_torch(fn, n=n)
  return out


def version() -> Optional[str]:
  return torch.__version__
