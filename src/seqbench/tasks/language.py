r"""Language modelling: WikiText-2 and PTB (word level), PTB (character level).

Corpora and the published protocol:

* ``wikitext2``: WikiText-2 v1, tokenized ``wiki.{train,valid,test}.tokens``
  (Merity et al., 2016); vocabulary 33,278 including ``<eos>``.
* ``ptb-word``: Mikolov's Penn Treebank ``ptb.{train,valid,test}.txt``
  (Mikolov et al., 2010); vocabulary 10,000 including ``<eos>``.
* ``ptb-char``: Mikolov's ``ptb.char.{train,valid,test}.txt``: characters
  separated by spaces, word boundaries written ``_``; 50 symbols including the
  end-of-line symbol.

Tokenisation is that of pytorch/examples ``word_language_model``
(``data.py``): each line (universal newlines) becomes ``line.split() +
["<eos>"]``, so every line -- blank ones included -- contributes one ``<eos>``.
The character files are tokenised the same way (their symbols are already
space-separated) with ``<eos>`` standing for the newline; a final piece after
the last newline that holds only whitespace (the character files end in
``"\n "``) is not a line. Ids are assigned in order of first appearance over
train, valid, test (as pytorch/examples' ``Dictionary``).

The metric is the mean negative log-likelihood of every scored target token,
reported as word perplexity :math:`\exp(\bar\ell)` or bits per character
:math:`\bar\ell/\ln 2`. With the standard batching (:func:`batchify` into B
rows, then :func:`bptt_windows`) the scored tokens are the ``B (n-1)``
targets, ``n = N // B`` -- pytorch/examples' ``evaluate`` (eval batch size 10).

The Arrow pipeline: lines -> ``datasets.Dataset`` -> ``.map`` (split into
tokens) -> vocabulary -> ``.map`` (tokens to int32 ids, vectorised in Arrow)
-> cached ``DatasetDict`` with one row of ids per line.

References:
  Merity, Xiong, Bradbury & Socher (2016), "Pointer Sentinel Mixture Models",
  arXiv:1609.07843.
  Mikolov, Karafiat, Burget, Cernocky & Khudanpur (2010), "Recurrent neural
  network based language model", Interspeech.
  pytorch/examples, ``word_language_model/data.py`` and ``main.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import io
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping, Optional

import numpy as np

from seqbench.tasks import base
from seqbench.tasks import batching
from seqbench.tasks import metrics
from seqbench.tasks import storage
from seqbench.tasks.storage import DataError

EOS = "<eos>"
SPLITS = ("train", "valid", "test")

WIKITEXT2 = storage.Source(
    title="WikiText-2 (v1, tokenized)",
    folder="wikitext-2",
    files={s: f"wiki.{s}.tokens" for s in SPLITS},
    sha256={
        "train": "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
        "valid": "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
        "test": "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
    },
    vendored=True,
    hub="'Salesforce/wikitext' config 'wikitext-2-v1'",
    origin="the WikiText-2 v1 release (Merity et al., 2016; CC BY-SA 3.0)",
)

PTB_WORD = storage.Source(
    title="Penn Treebank, word level (Mikolov)",
    folder="ptb",
    files={s: f"ptb.{s}.txt" for s in SPLITS},
    sha256={
        "train": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
        "valid": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
        "test": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
    },
    hub="'ptb-text-only/ptb_text_only'",
    origin="Mikolov's simple-examples.tgz (data/ptb.*.txt; LDC-origin text, not vendored)",
)

PTB_CHAR = storage.Source(
    title="Penn Treebank, character level (Mikolov)",
    folder="ptb",
    files={s: f"ptb.char.{s}.txt" for s in SPLITS},
    sha256={
        "train": "e313d91425e06c4f0a8fb6e881dcce0c291f2a0e9f4dda54833069b122f91da9",
        "valid": "21661f63ec355085879458b6524644d4add5573541b4be14fb52ab2e2e995eb8",
        "test": "1ef5607ac3c463b16e38bfe7900dd3bfc91de5a96e0f21e7eab5188b465b8ebe",
    },
    hub="'ptb-text-only/ptb_text_only' (rewritten to characters)",
    origin="Mikolov's simple-examples.tgz (data/ptb.char.*.txt; LDC-origin text, not vendored)",
)

# Hub layouts: dataset path, config, split names, text column.
# (The hub moved its canonical datasets under organisations; these are the
# current names of the ones the issue lists: wikitext, ptb_text_only.)
_HUB = {
    "wikitext-2": ("Salesforce/wikitext", "wikitext-2-v1",
                   {"train": "train", "valid": "validation", "test": "test"}, "text"),
    "ptb": ("ptb-text-only/ptb_text_only", None,
            {"train": "train", "valid": "validation", "test": "test"}, "sentence"),
}


def text_lines(text: str) -> list[str]:
  """Lines as Python's text files give them (universal newlines).

  A final piece without a newline that holds only whitespace is dropped (the
  ``"\\n "`` ending of Mikolov's character files); any other final piece is
  a line, as with ``readlines``.
  """
  lines = list(io.StringIO(text, newline=None))
  if lines and not lines[-1].endswith("\n") and not lines[-1].strip():
    lines.pop()
  return lines


def tokenize_line(line: str) -> list[str]:
  """pytorch/examples: ``line.split() + ["<eos>"]``."""
  return line.split() + [EOS]


def sentence_to_chars(sentence: str) -> list[str]:
  """Mikolov's character rewrite of one word-level line.

  Strip the line, write the remaining spaces as ``_``, emit each character,
  then the end of line. Applied to ``ptb.{valid,test}.txt`` this reproduces
  ``ptb.char.{valid,test}.txt`` (see the shared PTB README).
  """
  return list(" ".join(sentence.split()).replace(" ", "_")) + [EOS]


def _tokenize_batch(batch: Mapping[str, list], chars: bool) -> dict:
  fn = sentence_to_chars if chars else tokenize_line
  return {"tokens": [fn(line) for line in batch["text"]]}


def _ids_batch(table, vocab) -> Any:
  # Vectorised lookup: flatten the token lists, index_in against the
  # vocabulary, and rebuild the lists on the same (rebased) offsets.
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  import pyarrow.compute as pc  # pylint: disable=import-outside-toplevel
  col = table.column("tokens").combine_chunks()
  flat = pc.list_flatten(col)
  ids = pc.index_in(flat, value_set=vocab).cast(pa.int32())
  offsets = pc.subtract(col.offsets, col.offsets[0])
  return pa.table({"ids": pa.ListArray.from_arrays(offsets, ids)})


def _build(lines: Mapping[str, list[str]], chars_from_sentences: bool, key: str,
           meta: dict):
  """DatasetDict of per-line int32 ids, and meta with the vocabulary."""
  import datasets  # pylint: disable=import-outside-toplevel
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  import pyarrow.compute as pc  # pylint: disable=import-outside-toplevel
  dsd = datasets.DatasetDict(
      {s: datasets.Dataset.from_dict({"text": lines[s]}) for s in SPLITS})
  tokens = datasets.DatasetDict({
      s: d.map(_tokenize_batch, batched=True, batch_size=2000, remove_columns=["text"],
               fn_kwargs={"chars": chars_from_sentences},
               new_fingerprint=f"{key}-{s}-tokens")
      for s, d in dsd.items()
  })
  chunks = [
      chunk for s in SPLITS
      for chunk in pc.list_flatten(tokens[s].with_format("arrow")[:].column("tokens")).chunks
  ]
  # Arrow's unique keeps first-appearance order, so train words come first, in
  # order: the ids of pytorch/examples' Dictionary.
  vocab = pc.unique(pa.chunked_array(chunks, type=pa.string()))
  features = datasets.Features({"ids": datasets.List(datasets.Value("int32"))})
  ids = datasets.DatasetDict({
      s: d.with_format("arrow").map(_ids_batch, batched=True, batch_size=5000,
                                    remove_columns=["tokens"], features=features,
                                    fn_kwargs={"vocab": vocab},
                                    new_fingerprint=f"{key}-{s}-ids").with_format(None)
      for s, d in tokens.items()
  })
  return ids, dict(meta, vocab=vocab.to_pylist())


@dataclasses.dataclass(frozen=True)
class Corpus:
  """A tokenised corpus: one int32 stream per split plus the vocabulary."""

  streams: Mapping[str, np.ndarray]
  lines: Mapping[str, int]
  vocab: tuple[str, ...]
  meta: Mapping[str, Any]


def _read_corpus_files(source: storage.Source, paths: Mapping[str, Path]):
  lines, hashes = {}, {}
  for split in SPLITS:
    data = storage.read_bytes(paths[split])
    hashes[split] = storage.sha256_hex(data)
    lines[split] = text_lines(storage.decode_text(paths[split], data))
    if not lines[split]:
      raise DataError(f"{paths[split]}: no lines; expected a {source.title} file.")
  return lines, hashes


def _hub_lines(source: storage.Source, location: storage.Location):
  path, config, names, column = _HUB[source.folder]
  dsd = storage.load_from_hub(source, location, path, config)
  lines = {}
  for split, hub_split in names.items():
    if hub_split not in dsd or column not in dsd[hub_split].column_names:
      raise DataError(
          f"{source.title}: the hub dataset {path!r} has no split {hub_split!r} with a "
          f"{column!r} column; put the files in the data root instead.")
    lines[split] = list(dsd[hub_split][column])
  return lines, f"{path}/{config}" if config else path


def load_corpus(source: storage.Source, location: storage.Location) -> Corpus:
  """Locate, parse, tokenise (cached) and materialise a corpus.

  Raises:
    DataError: missing, incomplete, corrupt or empty files.
  """
  chars = source is PTB_CHAR
  paths = source.locate(location)
  if paths is not None:
    key = storage.files_key(paths, source.folder + ("-chars" if chars else ""))

    def build():
      lines, hashes = _read_corpus_files(source, paths)
      meta = {"source": str(paths["train"].parent), "sha256": hashes,
              "verified": storage.verified(hashes, source)}
      return _build(lines, False, key, meta)
  elif location.hub_enabled():
    lines, hub_name = _hub_lines(source, location)
    key = storage.content_key(line.encode("utf-8") + b"\0"
                              for split in SPLITS for line in lines[split])
    key += "-chars" if chars else ""

    def build():
      meta = {"source": f"hub:{hub_name}", "sha256": {}, "verified": None}
      return _build(lines, chars, key, meta)
  else:
    raise DataError(source.missing_message(location))

  dsd, meta = storage.cached_dataset_dict(location, source.folder + ("-chars" if chars else ""),
                                          key, build)
  streams, counts = {}, {}
  import pyarrow.compute as pc  # pylint: disable=import-outside-toplevel
  for split in SPLITS:
    table = dsd[split].with_format("arrow")[:]
    streams[split] = np.ascontiguousarray(
        pc.list_flatten(table.column("ids")).to_numpy(zero_copy_only=False), dtype=np.int32)
    counts[split] = table.num_rows
  return Corpus(streams=streams, lines=counts, vocab=tuple(meta["vocab"]), meta=meta)


@functools.lru_cache(maxsize=8)
def _cached_corpus(source_title: str, location: storage.Location, key: str) -> Corpus:
  del key  # part of the lru key only
  source = {s.title: s for s in (WIKITEXT2, PTB_WORD, PTB_CHAR)}[source_title]
  return load_corpus(source, location)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LanguageModelTask(base.Task):
  """Next-token prediction on a token stream (see the module docstring).

  Batches: ``{"inputs", "targets"}`` int32 ``(B, l)``, ``"mask"`` float32
  ``(B, l)``; ``outputs`` are logits ``(B, l, V)`` with ``V = vocab_size``.
  """

  family: ClassVar[str] = "language"
  splits: ClassVar[tuple[str, ...]] = SPLITS
  source: ClassVar[storage.Source]

  def corpus(self) -> Corpus:
    """The tokenised corpus (memoised per process; re-checked against the files)."""
    return _cached_corpus(self.source.title, self.location,
                          storage.memo_key(self.source, self.location))

  @property
  def vocab(self) -> tuple[str, ...]:
    return self.corpus().vocab

  @property
  def vocab_size(self) -> int:
    return len(self.corpus().vocab)

  def stream(self, split: str) -> np.ndarray:
    """The split as one int32 token stream (``<eos>`` after every line)."""
    self.check_split(split)
    return self.corpus().streams[split]

  def batches(self, split: str, batch_size: int, *, length: int = 35,
              context: Optional[int] = None, pad: bool = False,
              **unused) -> Iterator[base.Batch]:
    """Batchify the split into ``batch_size`` rows and yield windows in order.

    Args:
      split: ``"train"``, ``"valid"`` or ``"test"``.
      batch_size: rows B (pytorch/examples: 20 for training, 10 for eval).
      length: BPTT length L (pytorch/examples ``--bptt 35``), or the number
        of scored positions per window when ``context`` is given.
      context: None for consecutive BPTT windows (carry the state across
        them); k for independent windows giving each target k inputs of
        context (:func:`~seqbench.tasks.batching.context_windows`).
      pad: pad short windows to a single shape with ``mask = 0``.
      **unused: accepts ``shuffle`` etc. for a uniform call; LM windows are
        always in order (the state carries across them).
    """
    for key in unused:
      if key not in ("shuffle", "seed", "epoch"):
        raise TypeError(f"{self.name}.batches() got an unexpected keyword argument {key!r}")
    rows = batching.batchify(self.stream(split), batch_size)
    if context is None:
      return batching.bptt_windows(rows, length, pad=pad)
    return batching.context_windows(rows, context, length, pad=pad)

  def loss(self, outputs, batch):
    """Mean NLL per scored token (nats)."""
    total, count = metrics.token_nll(outputs, batch["targets"], batch["mask"])
    return total / count

  def stats(self) -> dict:
    corpus = self.corpus()
    v = len(corpus.vocab)
    splits = {}
    for split in SPLITS:
      s = corpus.streams[split]
      splits[split] = {
          "sequences": int(corpus.lines[split]),
          "tokens": int(s.shape[0]),
          "vocab": int(np.count_nonzero(np.bincount(s, minlength=v))),
      }
    return {
        "name": self.name,
        "family": self.family,
        "metric": self.metric.name,
        "vocab": v,
        "source": corpus.meta.get("source"),
        "verified": corpus.meta.get("verified"),
        "splits": splits,
    }


_NLL = lambda outputs, batch: metrics.token_nll(outputs, batch["targets"], batch["mask"])

PERPLEXITY = metrics.Metric("perplexity", "exp(mean NLL per token, <eos> included)",
                            False, _NLL, metrics.perplexity)
BPC = metrics.Metric("bpc", "mean NLL per character / ln 2 (end of line included)",
                     False, _NLL, metrics.bits_per_character)


@dataclasses.dataclass(frozen=True, kw_only=True)
class WikiText2(LanguageModelTask):
  name: ClassVar[str] = "wikitext2"
  summary: ClassVar[str] = "WikiText-2 v1 word LM, perplexity (vendored)"
  source: ClassVar[storage.Source] = WIKITEXT2
  metric: ClassVar[metrics.Metric] = PERPLEXITY


@dataclasses.dataclass(frozen=True, kw_only=True)
class PTBWord(LanguageModelTask):
  name: ClassVar[str] = "ptb-word"
  summary: ClassVar[str] = "Penn Treebank word LM (Mikolov), perplexity"
  source: ClassVar[storage.Source] = PTB_WORD
  metric: ClassVar[metrics.Metric] = PERPLEXITY


@dataclasses.dataclass(frozen=True, kw_only=True)
class PTBChar(LanguageModelTask):
  name: ClassVar[str] = "ptb-char"
  summary: ClassVar[str] = "Penn Treebank character LM (Mikolov), bits per character"
  source: ClassVar[storage.Source] = PTB_CHAR
  metric: ClassVar[metrics.Metric] = BPC
