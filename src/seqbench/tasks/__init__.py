"""Tasks: data + batching + loss + metric, for the published benchmarks.

==============  ==========================================  =====================
name            data                                        metric
==============  ==========================================  =====================
``wikitext2``   WikiText-2 v1 (vendored)                    word perplexity
``ptb-word``    Mikolov PTB ``ptb.*.txt``                   word perplexity
``ptb-char``    Mikolov PTB ``ptb.char.*.txt``              bits per character
``jsb``         JSB Chorales ``.mat`` (vendored)            frame NLL
``nottingham``  Nottingham ``.mat`` (vendored)              frame NLL
``smnist``      MNIST pixels in raster order                test accuracy
``pmnist``      MNIST pixels, one fixed seeded permutation  test accuracy
``adding``      adding problem, generated (T=600)           MSE
``copy``        copy memory, generated (T=1000)             cross-entropy / step
==============  ==========================================  =====================

Usage::

    from seqbench import tasks
    task = tasks.get_task("wikitext2")
    for batch in task.batches("train", 20, length=35):
      loss = task.loss(model_logits, batch)          # jnp scalar
    stat = task.metric(logits, batch)                # (total, count), jit-able
    ppl = task.metric.reduce(stats)                  # over a split

Data lookup, caching and the hub: :mod:`seqbench.tasks.storage`. Batch layout:
:mod:`seqbench.tasks.batching`. Metric definitions: :mod:`seqbench.tasks.metrics`.
ATIS is not provided (LDC-licensed; see ``README.md`` in this folder).
"""

from seqbench.tasks import batching
from seqbench.tasks import metrics
from seqbench.tasks.base import Task
from seqbench.tasks.metrics import Metric
from seqbench.tasks.registry import TASKS, get_task, task_class, task_names
from seqbench.tasks.storage import DataError, Location

__all__ = ["Task", "Metric", "DataError", "Location", "TASKS", "get_task", "task_class",
           "task_names", "batching", "metrics"]
