"""CIFAR-10 from the official "python version" folder ``cifar-10-batches-py``.

Each of ``data_batch_1`` … ``data_batch_5`` and ``test_batch`` is a protocol-2 pickle written by
Python 2: a dict with ``data`` (uint8 ``(N, 3072)``, each row 1024 R, 1024 G, 1024 B values,
row-major) and ``labels`` (N ints in 0..9). A pickle can run arbitrary code, so it is read with
an unpickler that builds nothing but numpy arrays and plain containers.
"""

import pickle
from pathlib import Path

import numpy as np

from qdarts.errors import DataError

try:  # numpy 2 moved numpy.core to numpy._core; the files name the old path
  from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover (numpy 1.x)
  from numpy.core.multiarray import _reconstruct

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
SIDE, CHANNELS, NUM_CLASSES = 32, 3, 10

# The only globals a CIFAR batch needs: numpy's array reconstruction.
_ALLOWED_GLOBALS = {
  ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
  ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
  ("numpy", "ndarray"): np.ndarray,
  ("numpy", "dtype"): np.dtype,
}


class ArraysOnlyUnpickler(pickle.Unpickler):
  """Unpickles plain data and numpy arrays; any other global (a function, a class) is refused."""

  def find_class(self, module: str, name: str):
    try:
      return _ALLOWED_GLOBALS[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(
        f"refusing global {module}.{name} (a CIFAR batch holds only arrays, lists and bytes)"
      ) from None


def has_cifar_files(folder: Path) -> bool:
  return (folder / TRAIN_BATCHES[0]).is_file()


def _field(batch: dict, key: str):
  """``batch[key]`` whether the pickle's keys are bytes (Python 2 files) or str."""
  if key.encode() in batch:
    return batch[key.encode()]
  return batch.get(key)


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
  """One batch file: images ``(N, 32, 32, 3)`` uint8 NHWC and labels ``(N,)`` int32.

  Raises:
    DataError: naming the file, when it is missing, not a CIFAR-10 batch pickle, or its
      shapes, dtype or labels are not those of CIFAR-10.
  """
  try:
    with open(path, "rb") as f:
      batch = ArraysOnlyUnpickler(f, encoding="bytes").load()
  except FileNotFoundError as e:
    raise DataError(f"{path}: file not found (a {FOLDER} folder holds {_names()})") from e
  except Exception as e:  # any unpickling failure means a foreign or corrupt file
    raise DataError(
      f"{path}: not a CIFAR-10 python batch ({e.__class__.__name__}: {e}); "
      "expected the pickled dicts of the official cifar-10-python.tar.gz"
    ) from e
  if not isinstance(batch, dict):
    raise DataError(f"{path}: holds a {type(batch).__name__}, expected a dict with data, labels")
  data, labels = _field(batch, "data"), _field(batch, "labels")
  if data is None or labels is None:
    keys = ", ".join(k.decode() if isinstance(k, bytes) else str(k) for k in batch)
    raise DataError(f"{path}: keys {keys}; expected data and labels (a CIFAR-10 batch)")
  row = SIDE * SIDE * CHANNELS
  if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
    kind = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
    raise DataError(f"{path}: data is {kind}, expected a uint8 array (N, {row})")
  if data.shape[1] != row:
    raise DataError(f"{path}: data rows hold {data.shape[1]} values, expected {row} (32x32x3)")
  try:
    y = np.asarray(labels, dtype=np.int64)
  except (TypeError, ValueError) as e:
    raise DataError(f"{path}: labels are not integers ({e})") from e
  if y.shape != (len(data),):
    raise DataError(f"{path}: {y.size} labels for {len(data)} images")
  bad = (y < 0) | (y >= NUM_CLASSES)
  if bad.any():
    i = int(np.argmax(bad))
    raise DataError(f"{path}: label {y[i]} at row {i}, expected 0..{NUM_CLASSES - 1}")
  images = data.reshape(-1, CHANNELS, SIDE, SIDE).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), y.astype(np.int32)


def _names() -> str:
  return ", ".join((*TRAIN_BATCHES, TEST_BATCH))


def read_cifar10(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """``(x_train, y_train, x_test, y_test)``: 50,000 and 10,000 images of a full folder."""
  train = [read_cifar_batch(folder / name) for name in TRAIN_BATCHES]
  x_test, y_test = read_cifar_batch(folder / TEST_BATCH)
  x_train = np.concatenate([x for x, _ in train])
  y_train = np.concatenate([y for _, y in train])
  return x_train, y_train, x_test, y_test
