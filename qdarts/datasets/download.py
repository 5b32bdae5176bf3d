"""Optional download of the official dataset files, SHA-256 checked, written atomically.

Checksums are those of the files the official sites serve (the same values are pinned by
TensorFlow Datasets, torchvision and others). A file is written to ``.NAME.PID.part`` beside
its destination and renamed only once its checksum matches, so an interrupted or corrupt
download never looks like data.
"""

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from qdarts.datasets import cifar, idx
from qdarts.errors import DataError

TIMEOUT_S = 60
CHUNK = 1 << 20


@dataclass(frozen=True)
class Remote:
  """One file to fetch: its name on disk, its mirrors (tried in order) and its SHA-256."""

  filename: str
  urls: tuple[str, ...]
  sha256: str


def _idx_remotes(mirrors: Sequence[str], sha256: Sequence[str]) -> tuple[Remote, ...]:
  names = [f"{stem}.gz" for stem in idx.FILES]
  return tuple(
    Remote(name, tuple(m + name for m in mirrors), digest)
    for name, digest in zip(names, sha256, strict=True)
  )


# In the order of idx.FILES: train images, train labels, test images, test labels.
REMOTES: dict[str, tuple[Remote, ...]] = {
  "cifar10": (
    Remote(
      "cifar-10-python.tar.gz",
      ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
      "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    ),
  ),
  "mnist": _idx_remotes(
    (  # yann.lecun.com refuses most automated downloads; these mirrors serve the same bytes
      "https://ossci-datasets.s3.amazonaws.com/mnist/",
      "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    (
      "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
      "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
      "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
      "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
  ),
  "fashion_mnist": _idx_remotes(
    ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    (
      "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
      "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
      "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
      "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    ),
  ),
}

# Where each dataset lies under a data root (the layout of the shared datasets folder).
SUBFOLDER = {"cifar10": "cifar10", "mnist": "mnist", "fashion_mnist": "fashion-mnist"}


def _stream_to(url: str, part: Path) -> str:
  """Copies ``url`` into ``part``; returns the SHA-256 of the bytes written."""
  digest = hashlib.sha256()
  with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(part, "wb") as out:
    while chunk := response.read(CHUNK):
      digest.update(chunk)
      out.write(chunk)
  return digest.hexdigest()


def fetch(remote: Remote, dest: Path) -> Path:
  """Downloads ``remote`` to ``dest`` (mirrors in order), checking its SHA-256.

  Raises:
    DataError: when no mirror gave a file with the expected checksum; says what each gave.
  """
  dest.parent.mkdir(parents=True, exist_ok=True)
  part = dest.with_name(f".{dest.name}.{os.getpid()}.part")
  failures = []
  for url in remote.urls:
    try:
      got = _stream_to(url, part)
    except (OSError, ValueError) as e:  # URLError and timeouts are OSErrors
      part.unlink(missing_ok=True)
      failures.append(f"{url}: {e}")
      continue
    if got != remote.sha256:
      part.unlink(missing_ok=True)
      failures.append(f"{url}: SHA-256 {got} does not match the expected {remote.sha256}")
      continue
    os.replace(part, dest)
    return dest
  raise DataError(
    f"{dest}: download failed ({'; '.join(failures)}); fetch {remote.filename} by hand "
    f"and pass its folder with --data-dir"
  )


def extract_cifar(archive: Path, folder: Path) -> Path:
  """Unpacks the regular files of ``cifar-10-batches-py/`` from the official archive into
  ``folder/cifar-10-batches-py`` (members elsewhere, links and ``..`` are skipped), atomically.
  """
  final = folder / cifar.FOLDER
  staging = Path(tempfile.mkdtemp(prefix=".cifar-", dir=folder))
  try:
    with tarfile.open(archive, "r:gz") as tar:
      for member in tar:
        parts = PurePosixPath(member.name).parts
        if member.isfile() and len(parts) == 2 and parts[0] == cifar.FOLDER:
          with tar.extractfile(member) as src, open(staging / parts[1], "wb") as dst:
            shutil.copyfileobj(src, dst)
    missing = [n for n in (*cifar.TRAIN_BATCHES, cifar.TEST_BATCH) if not (staging / n).is_file()]
    if missing:
      raise DataError(f"{archive}: the archive lacks {cifar.FOLDER}/{', '.join(missing)}")
    if final.exists():
      shutil.rmtree(final)
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the data from other users
    os.replace(staging, final)
  except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
    raise DataError(f"{archive}: cannot unpack ({e.__class__.__name__}: {e})") from e
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return final


def download_dataset(name: str, root: Path, remotes: Sequence[Remote] | None = None) -> Path:
  """Fetches dataset ``name`` into ``root/<subfolder>``; returns the folder that holds it.

  Args:
    name: ``cifar10``, ``mnist`` or ``fashion_mnist``.
    root: the data root (``data.data_dir``, else ``~/.cache/qdarts/datasets``).
    remotes: the files to fetch; default ``REMOTES[name]`` (tests serve file:// URLs).
  """
  remotes = REMOTES[name] if remotes is None else remotes
  folder = root / SUBFOLDER[name]
  if name == "cifar10":
    (remote,) = remotes
    archive = fetch(remote, folder / remote.filename)
    try:
      return extract_cifar(archive, folder)
    finally:
      archive.unlink(missing_ok=True)
  for remote in remotes:
    fetch(remote, folder / remote.filename)
  return folder
