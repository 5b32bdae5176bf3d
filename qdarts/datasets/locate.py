"""Where the dataset files are looked for, in order, and the error when they are nowhere.

Roots, in order: ``data.data_dir`` (or ``--data-dir``), ``$QDARTS_DATA_DIR``, the download cache
``~/.cache/qdarts/datasets``, then Debian's data packages (``dataset-fashion-mnist`` installs
``/usr/share/datasets/fashion-mnist``). A root may be the dataset's own folder or a parent
laid out like the shared datasets folder: ``cifar10/cifar-10-batches-py``, ``fashion-mnist/*.gz``,
``mnist/*.gz``.
"""

import os
from collections.abc import Callable
from pathlib import Path

from qdarts.datasets import cifar, idx
from qdarts.datasets.download import SUBFOLDER, download_dataset
from qdarts.errors import DataError

ENV_VAR = "QDARTS_DATA_DIR"

# Debian installs dataset-fashion-mnist here; no Debian release in reach packages MNIST, and
# /usr/share/datasets/mnist is where a package following the same convention would put it.
DEBIAN_DIRS = {
  "fashion_mnist": (Path("/usr/share/datasets/fashion-mnist"),),
  "mnist": (Path("/usr/share/datasets/mnist"),),
}

# Folders under a root that may hold the files, most specific first; "" is the root itself.
CANDIDATES = {
  "cifar10": ("cifar10/cifar-10-batches-py", "cifar-10-batches-py", ""),
  "fashion_mnist": ("fashion-mnist", "fashion_mnist", ""),
  "mnist": ("mnist", ""),
}

HAS_FILES: dict[str, Callable[[Path], bool]] = {
  "cifar10": cifar.has_cifar_files,
  "fashion_mnist": idx.has_idx_files,
  "mnist": idx.has_idx_files,
}

WHAT = {
  "cifar10": f"{cifar.FOLDER}/{cifar.TRAIN_BATCHES[0]}",
  "fashion_mnist": f"{idx.TRAIN_IMAGES}.gz",
  "mnist": f"{idx.TRAIN_IMAGES}.gz",
}


def cache_dir() -> Path:
  """The download cache, ``~/.cache/qdarts/datasets``."""
  return Path.home() / ".cache" / "qdarts" / "datasets"


def search_roots(name: str, data_dir: str | None) -> list[tuple[Path, str]]:
  """``(folder, where it came from)`` pairs, in lookup order."""
  roots = []
  if data_dir:
    roots.append((Path(data_dir).expanduser(), "data.data_dir"))
  if os.environ.get(ENV_VAR):
    roots.append((Path(os.environ[ENV_VAR]).expanduser(), f"${ENV_VAR}"))
  roots.append((cache_dir(), "download cache"))
  roots += [(d, "Debian package path") for d in DEBIAN_DIRS.get(name, ())]
  return roots


def find_dataset(name: str, data_dir: str | None) -> Path | None:
  """The first folder holding dataset ``name``'s files, or None."""
  for root, _ in search_roots(name, data_dir):
    for sub in CANDIDATES[name]:
      folder = root / sub if sub else root
      if HAS_FILES[name](folder):
        return folder
  return None


def locate_dataset(name: str, data_dir: str | None, download: bool) -> Path:
  """The folder of dataset ``name``: found, or downloaded when ``download``.

  Downloads go to ``data_dir`` if given, else to the cache.

  Raises:
    DataError: saying where it looked and how to get the data.
  """
  found = find_dataset(name, data_dir)
  if found is not None:
    return found
  target = Path(data_dir).expanduser() if data_dir else cache_dir()
  if download:
    return download_dataset(name, target)
  looked = "; ".join(
    f"{root} ({why}{'' if root.is_dir() else ', no such folder'})"
    for root, why in search_roots(name, data_dir)
  )
  raise DataError(
    f"data.dataset={name}: no {WHAT[name]} found in {looked}. Get it with data.download=true "
    f"(the official files, SHA-256 checked, into {target / SUBFOLDER[name]}) or pass "
    f"--data-dir PATH (or set ${ENV_VAR}) pointing at a folder that holds it"
  )
