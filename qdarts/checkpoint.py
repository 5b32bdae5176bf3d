"""Search checkpoints: every array of the search state in one ``.npz``, no pickle.

A checkpoint holds the leaves of ``(weight TrainState, arch TrainState, CostObjective)`` — the
weights, LSQ step sizes, op and bit logits, both optimizer states, and the budget terms' λ —
plus a JSON document with the position (epoch, step), the metrics of the epoch so far and the
history of finished epochs. The PRNG keys and the data order need no storing: every key is
``fold_in(seed, epoch, step)``, so a resumed search draws what the uninterrupted one would.

Files are ``search-E{epoch}-S{step}.npz`` (zero padded, so names sort by position), written
atomically; the newest ``keep`` are kept. Loading reads with ``allow_pickle=False`` and checks
every leaf's shape and dtype against the freshly built state, so a checkpoint of another config
is refused, never silently mixed in.
"""

import io
import json
import signal
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np

from qdarts.errors import (  # noqa: F401 (re-export)
  ConfigError,
  NonFiniteSearch,
  RunFolderError,
  SearchInterrupted,
)
from qdarts.run_dir import atomic_write_bytes

FORMAT = "qdarts.search_checkpoint/1"


@dataclass
class Position:
  """Where a search is: ``step`` steps of epoch ``epoch`` are done (step 0: none)."""

  epoch: int = 0
  step: int = 0
  partial_metrics: dict = field(default_factory=lambda: {"weight": [], "arch": []})
  history: list = field(default_factory=list)


def checkpoint_name(epoch: int, step: int) -> str:
  return f"search-E{epoch:04d}-S{step:07d}.npz"


def save_checkpoint(folder: Path, state, position: Position, keep: int) -> Path:
  """Writes ``state`` (a pytree of arrays) and ``position``; removes all but the newest
  ``keep`` checkpoints. Returns the file written."""
  leaves = jax.tree.leaves(jax.device_get(state))
  arrays = {f"leaf{i:05d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
  doc = {
    "format": FORMAT,
    "epoch": position.epoch,
    "step": position.step,
    "partial_metrics": position.partial_metrics,
    "history": position.history,
    "leaves": len(leaves),
  }
  arrays["checkpoint.json"] = np.frombuffer(json.dumps(doc).encode(), np.uint8)
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  try:
    folder.mkdir(parents=True, exist_ok=True)
  except OSError as err:
    raise RunFolderError(f"{folder}: cannot create the folder ({err.strerror})") from None
  path = atomic_write_bytes(
    folder / checkpoint_name(position.epoch, position.step), buffer.getvalue()
  )
  for old in sorted(folder.glob("search-E*-S*.npz"))[:-keep]:
    old.unlink(missing_ok=True)
  return path


def load_checkpoint(path: Path, like) -> tuple[object, Position]:
  """The state (with ``like``'s tree structure) and position stored in ``path``.

  Raises:
    ConfigError: not a checkpoint, or one whose arrays do not fit ``like`` (another config).
  """
  try:
    with np.load(path, allow_pickle=False) as npz:
      arrays = {k: npz[k] for k in npz.files}
    doc = json.loads(arrays.pop("checkpoint.json").tobytes())
  except (OSError, ValueError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as e:
    raise ConfigError(
      f"{path}: not a readable search checkpoint ({e.__class__.__name__})"
    ) from None
  if doc.get("format") != FORMAT:
    raise ConfigError(f"{path}: not a qdarts search checkpoint (format {FORMAT!r})")
  like_leaves, treedef = jax.tree.flatten(like)
  leaves = [arrays.get(f"leaf{i:05d}") for i in range(doc["leaves"])]
  if len(leaves) != len(like_leaves) or any(
    a is None or a.shape != np.shape(b) or a.dtype != np.asarray(b).dtype
    for a, b in zip(leaves, like_leaves, strict=False)
  ):
    raise ConfigError(
      f"{path}: the checkpoint's arrays do not match this run's config (another space, bits or "
      "optimizer?)"
    )
  position = Position(doc["epoch"], doc["step"], doc["partial_metrics"], doc["history"])
  return jax.tree.unflatten(treedef, leaves), position


def latest_checkpoint(folder: Path) -> Path | None:
  """The newest checkpoint in ``folder`` that opens (a torn newest file falls back to the one
  before it), or None."""
  for path in sorted(folder.glob("search-E*-S*.npz"), reverse=True):
    try:
      with np.load(path, allow_pickle=False) as npz:
        json.loads(npz["checkpoint.json"].tobytes())
      return path
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
      continue
  return None


class StopRequest:
  """SIGINT handling for a search: the first Ctrl-C asks the loop to stop at the next step
  boundary (after a checkpoint); a second one interrupts at once."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGINT, self._handle)
    except ValueError:  # not the main thread: leave SIGINT alone
      self._previous = None
    return self

  def _handle(self, signum, frame):
    if self.requested:
      raise KeyboardInterrupt
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGINT, self._previous)
    return False
