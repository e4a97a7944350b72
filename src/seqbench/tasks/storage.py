"""Where task data lives: data root, vendored copies, the Arrow cache, the hub.

Lookup order for a dataset's raw files (the first that has *any* of them wins):

1. the data root: the ``data_dir`` argument (``--data-dir``), else the
   environment variable ``SEQBENCH_DATA``, else ``<user cache>/seqbench/data``;
   files are looked for in ``<root>/<folder>/`` (the layout of the shared data
   folder, e.g. ``<root>/wikitext-2/wiki.train.tokens.gz``) and then directly
   in ``<root>/``; each file may be gzipped (``NAME.gz``) or plain (``NAME``);
2. the copy vendored in the package (``seqbench/data/<folder>/``), for the small
   public datasets the default tasks need (WikiText-2, JSB, Nottingham);
3. the Hugging Face hub through ``datasets.load_dataset``, only when asked for
   (``hub=True`` or ``SEQBENCH_HUB=1``) and never when ``HF_DATASETS_OFFLINE``
   or ``HF_HUB_OFFLINE`` is set. It is opt-in so that nothing here touches the
   network unless a user says so; without it a missing dataset is one
   :class:`DataError` naming the dataset, the files and the directory.

A location holding only some of a dataset's files is an error (a missing split),
not a reason to silently mix sources.

Parsed data is stored as a Hugging Face ``datasets.DatasetDict`` (Arrow files,
memory-mapped on load) under the cache root -- ``cache_dir``, else
``SEQBENCH_CACHE``, else ``<user cache>/seqbench/arrow`` -- keyed by the SHA-256
of the raw files plus :data:`PIPELINE_VERSION`. The cache is written to a
temporary directory next to its final place and renamed into place only when
complete, so an interrupted or failed build never leaves a half-written entry,
and fixing a bad file simply produces a new key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import json
import os
import shutil
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

#: Bump when the parsing/tokenisation changes, so old cache entries are unused.
PIPELINE_VERSION = "1"

ENV_DATA = "SEQBENCH_DATA"
ENV_CACHE = "SEQBENCH_CACHE"
ENV_HUB = "SEQBENCH_HUB"
_OFFLINE_ENVS = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")

#: Package folder with the vendored datasets.
VENDORED_ROOT = Path(__file__).resolve().parent.parent / "data"


class DataError(Exception):
  """A problem with the user's data or request, reported without a traceback.

  Raised for missing, truncated, corrupt or wrongly formatted files, unknown
  task names and unknown splits. The message is complete on its own: the CLI
  prints it to stderr and exits with a non-zero status.
  """


def _truthy(value: Optional[str]) -> bool:
  return (value or "").strip().lower() in ("1", "true", "yes", "on")


def user_cache_home() -> Path:
  """``$XDG_CACHE_HOME/seqbench`` (default ``~/.cache/seqbench``)."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return Path(base) / "seqbench"


@dataclasses.dataclass(frozen=True)
class Location:
  """Where to look for raw data and where to cache parsed data.

  Attributes:
    data_dir: explicit data root; ``None`` means ``SEQBENCH_DATA`` or the
      user cache directory.
    cache_dir: explicit Arrow cache root; ``None`` means ``SEQBENCH_CACHE`` or
      the user cache directory.
    hub: allow fetching a missing dataset from the Hugging Face hub; ``None``
      means "if ``SEQBENCH_HUB`` is set".
  """

  data_dir: Optional[str] = None
  cache_dir: Optional[str] = None
  hub: Optional[bool] = None

  def data_root(self) -> tuple[Path, str]:
    """The data root and a phrase saying where it came from (for messages)."""
    if self.data_dir:
      return Path(self.data_dir).expanduser(), "from --data-dir"
    env = os.environ.get(ENV_DATA)
    if env:
      return Path(env).expanduser(), f"from {ENV_DATA}"
    return user_cache_home() / "data", f"the default; set {ENV_DATA} or --data-dir to change it"

  def cache_root(self) -> Path:
    if self.cache_dir:
      return Path(self.cache_dir).expanduser()
    env = os.environ.get(ENV_CACHE)
    if env:
      return Path(env).expanduser()
    return user_cache_home() / "arrow"

  def hub_enabled(self) -> bool:
    if any(_truthy(os.environ.get(name)) for name in _OFFLINE_ENVS):
      return False
    if self.hub is not None:
      return self.hub
    return _truthy(os.environ.get(ENV_HUB))


@dataclasses.dataclass(frozen=True)
class Source:
  """The raw files of one dataset.

  Attributes:
    title: human name, e.g. ``"WikiText-2"``.
    folder: folder name under a data root, e.g. ``"wikitext-2"``.
    files: key -> file name (without ``.gz``); keys are split names for text
      corpora, file roles otherwise.
    sha256: key -> SHA-256 of the official *uncompressed* bytes, used to say
      whether the data is exactly the published one.
    vendored: whether a copy ships in ``seqbench/data/<folder>``.
    hub: the hub dataset a user may fetch instead (for messages), or ``None``.
    origin: where to get the files (for messages).
    compressed_ok: whether ``NAME.gz`` is accepted in place of ``NAME``.
  """

  title: str
  folder: str
  files: Mapping[str, str]
  sha256: Mapping[str, str]
  vendored: bool = False
  hub: Optional[str] = None
  origin: str = ""
  compressed_ok: bool = True

  def candidates(self, location: Location) -> list[Path]:
    root, _ = location.data_root()
    dirs = [root / self.folder, root]
    if self.vendored:
      dirs.append(VENDORED_ROOT / self.folder)
    return dirs

  def _find_in(self, directory: Path) -> dict[str, Path]:
    found = {}
    for key, name in self.files.items():
      names = [name + ".gz", name] if self.compressed_ok else [name]
      for candidate in names:
        path = directory / candidate
        if path.is_file():
          found[key] = path
          break
    return found

  def expected_names(self) -> str:
    suffix = " (optionally gzipped as NAME.gz)" if self.compressed_ok else ""
    return ", ".join(self.files.values()) + suffix

  def locate(self, location: Location) -> Optional[dict[str, Path]]:
    """The files of the first location holding any of them, or ``None``.

    Raises:
      DataError: a location holds some but not all of the files.
    """
    for directory in self.candidates(location):
      found = self._find_in(directory)
      if found and len(found) < len(self.files):
        missing = [name for key, name in self.files.items() if key not in found]
        raise DataError(
            f"{self.title}: {directory} has {len(found)} of the "
            f"{len(self.files)} files; missing {', '.join(missing)}. "
            f"Put all of {self.expected_names()} in that directory.")
      if found:
        return found
    return None

  def missing_message(self, location: Location) -> str:
    root, why = location.data_root()
    lines = [
        f"{self.title} not found: expected {self.expected_names()} in "
        f"{root / self.folder} (data root {root}, {why}).",
    ]
    if self.origin:
      lines.append(f"Get them from {self.origin}.")
    if self.hub:
      if location.hub_enabled():
        lines.append(f"Fetching {self.hub} from the Hugging Face hub failed too.")
      else:
        lines.append(
            f"Or allow fetching {self.hub} from the Hugging Face hub with "
            f"{ENV_HUB}=1 (needs network; off by default).")
    return " ".join(lines)


# --------------------------------------------------------------------- reading


def memo_key(source: Source, location: Location) -> str:
  """A per-process memo key for a source's parsed data.

  It names the files found (path, size, mtime, so that fixing a file within a
  process is seen), or the hub when the data would come from there.

  Raises:
    DataError: the files are missing (and the hub is off) or incomplete.
  """
  paths = source.locate(location)
  if paths is not None:
    return "|".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                    for p in paths.values()) + f"|{location.cache_root()}"
  if location.hub_enabled():
    return f"hub|{location.data_root()[0]}|{location.cache_root()}"
  raise DataError(source.missing_message(location))


def read_bytes(path: Path) -> bytes:
  """The file's content, decompressed when the name ends in ``.gz``.

  Raises:
    DataError: unreadable, empty, or a corrupt/truncated gzip stream.
  """
  try:
    raw = path.read_bytes()
  except OSError as e:
    raise DataError(f"{path}: cannot read the file ({e.strerror or e}).") from None
  if not raw:
    raise DataError(f"{path}: the file is empty.")
  if path.suffix != ".gz":
    return raw
  try:
    return gzip.decompress(raw)
  except (OSError, EOFError, zlib.error) as e:
    # gzip raises BadGzipFile (an OSError) for a wrong header, EOFError for a
    # truncated stream and zlib.error for corrupt deflate data.
    raise DataError(
        f"{path}: corrupt or truncated gzip file ({e}). Replace it with a good "
        f"copy (or the uncompressed file without .gz).") from None


def decode_text(path: Path, data: bytes) -> str:
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise DataError(
        f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); expected a "
        f"plain-text corpus file.") from None


def sha256_hex(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def files_key(paths: Mapping[str, Path], extra: str = "") -> str:
  """Cache key: SHA-256 over the stored bytes of the files plus the pipeline."""
  h = hashlib.sha256(f"v{PIPELINE_VERSION}|{extra}".encode())
  for key in sorted(paths):
    h.update(key.encode() + b"\0")
    try:
      with open(paths[key], "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
          h.update(chunk)
    except OSError as e:
      raise DataError(f"{paths[key]}: cannot read the file ({e.strerror or e}).") from None
  return h.hexdigest()[:20]


def content_key(chunks: Iterable[bytes], extra: str = "") -> str:
  """Cache key of data read from elsewhere (the hub): its bytes plus the pipeline."""
  h = hashlib.sha256(f"v{PIPELINE_VERSION}|{extra}".encode())
  for chunk in chunks:
    h.update(chunk)
  return "hub-" + h.hexdigest()[:16]


# ----------------------------------------------------------------------- cache


@contextlib.contextmanager
def quiet_datasets() -> Iterator[Any]:
  """Import ``datasets`` with its progress bars off for the duration."""
  import datasets  # pylint: disable=import-outside-toplevel
  was_enabled = datasets.is_progress_bar_enabled()
  datasets.disable_progress_bars()
  try:
    yield datasets
  finally:
    if was_enabled:
      datasets.enable_progress_bars()


def _remove_stale_temporaries(parent: Path, max_age_s: float = 3600.0) -> None:
  # A killed process cannot clean up after itself; its temporary directory is
  # never mistaken for an entry (entries are renamed into place only when
  # complete), but it wastes space, so drop old ones.
  now = time.time()
  for tmp in parent.glob(".tmp-*"):
    with contextlib.suppress(OSError):
      if now - tmp.stat().st_mtime > max_age_s:
        shutil.rmtree(tmp, ignore_errors=True)


def cached_dataset_dict(location: Location, name: str, key: str,
                        build: Callable[[], tuple[Any, dict]]) -> tuple[Any, dict]:
  """Load ``(DatasetDict, meta)`` from the Arrow cache, building it on a miss.

  Args:
    location: gives the cache root.
    name: dataset folder under the cache root.
    key: content key (see :func:`files_key`).
    build: returns ``(datasets.DatasetDict, meta)``; ``meta`` must be
      JSON-serialisable. It may raise :class:`DataError`; nothing is written
      then.

  Returns:
    The dataset dict (memory-mapped from the cache when it could be written)
    and the meta dictionary.
  """
  final = location.cache_root() / name / key
  with quiet_datasets() as datasets:
    if (final / "meta.json").is_file():
      try:
        meta = json.loads((final / "meta.json").read_text())
        return datasets.load_from_disk(str(final / "arrow")), meta
      except Exception:  # pylint: disable=broad-except
        # An entry damaged after it was written (disk full, manual edits):
        # rebuild rather than fail.
        shutil.rmtree(final, ignore_errors=True)
    elif final.exists():
      shutil.rmtree(final, ignore_errors=True)  # not ours: never completed
    dsd, meta = build()
    tmp = None
    try:
      final.parent.mkdir(parents=True, exist_ok=True)
      _remove_stale_temporaries(final.parent)
      tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
      os.chmod(tmp, 0o755)  # mkdtemp makes it private; the entry may be shared
      dsd.save_to_disk(str(tmp / "arrow"))
      (tmp / "meta.json").write_text(json.dumps(meta))
      try:
        os.replace(tmp, final)
      except OSError:
        # Another process finished the same entry first; use theirs.
        if not (final / "meta.json").is_file():
          raise
      tmp = None
      return datasets.load_from_disk(str(final / "arrow")), meta
    except OSError:
      # Read-only or full cache: still usable, just not cached.
      return dsd, meta
    finally:
      if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)


def load_from_hub(source: Source, location: Location, path: str,
                  name: Optional[str] = None) -> Any:
  """``datasets.load_dataset(path, name)``, any failure as a :class:`DataError`."""
  with quiet_datasets() as datasets:
    try:
      return datasets.load_dataset(path, name)
    except Exception as e:  # pylint: disable=broad-except
      raise DataError(f"{source.missing_message(location)} ({type(e).__name__}: {e})") from None


def verified(hashes: Mapping[str, str], source: Source) -> bool:
  """Whether every file's uncompressed SHA-256 is the official one."""
  return all(source.sha256.get(k) == v for k, v in hashes.items()) and set(
      hashes) == set(source.sha256)


def split_error(task: str, split: str, splits: Sequence[str]) -> DataError:
  return DataError(
      f"{task}: no split {split!r}; available splits: {', '.join(splits)}.")
