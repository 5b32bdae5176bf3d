"""The run folder and atomic artifact writes (temporary file, then ``os.replace``)."""

import hashlib
import json
import os
import tempfile
from datetime import datetime
from pathlib import Path

from qdarts.errors import RunFolderError


def atomic_write_bytes(path: Path, data: bytes) -> Path:
  """Writes ``data`` to ``path`` so a reader sees the old file or the whole new one.

  Raises:
    RunFolderError: the folder cannot be written (full disk, permissions); ``path`` keeps its
      old content, if any, and no temporary file is left behind.
  """
  path = Path(path)
  try:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  except OSError as err:
    raise _folder_error(path, err) from None
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; artifacts are ordinary files
    os.replace(tmp, path)
  except BaseException as err:
    Path(tmp).unlink(missing_ok=True)
    if isinstance(err, OSError):
      raise _folder_error(path, err) from None
    raise
  return path


def _folder_error(path: Path, err: OSError) -> RunFolderError:
  return RunFolderError(
    f"{path}: cannot write ({err.strerror or err.__class__.__name__}); the files written "
    "before it are intact (free space or fix permissions, then rerun or --resume)"
  )


def atomic_write_text(path: Path, text: str) -> Path:
  return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj) -> Path:
  return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def new_run_dir(out: Path | None, config_name: str) -> Path:
  """Creates ``runs/<config-name>-<YYYYmmdd-HHMMSS>/`` (or ``out``) and returns it.

  A second run in the same second gets a ``-2``, ``-3``… suffix rather than sharing a folder.
  """
  try:
    if out is not None:
      out = Path(out)
      out.mkdir(parents=True, exist_ok=True)
      return out
    base = Path("runs") / f"{config_name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    base.parent.mkdir(parents=True, exist_ok=True)
    path, n = base, 1
    while True:
      try:
        path.mkdir()
        return path
      except FileExistsError:
        n += 1
        path = base.with_name(f"{base.name}-{n}")
  except OSError as err:
    where = out if out is not None else Path("runs")
    raise RunFolderError(
      f"--out {where}: cannot create the run folder ({err.strerror or err.__class__.__name__})"
    ) from None


def file_digest(path: Path) -> dict:
  """``{"path", "bytes", "sha256"}`` of an artifact, for result.json."""
  data = Path(path).read_bytes()
  return {"path": Path(path).name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
