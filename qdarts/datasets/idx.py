"""MNIST and Fashion-MNIST: the IDX files (gzip'd or plain), parsed with gzip + numpy.

IDX layout (big-endian): two zero bytes, a type code (0x08 = unsigned byte), the number of
dimensions d, then d uint32 sizes and the data, row-major. Images have magic 2051 (d = 3:
count, rows, cols), labels 2049 (d = 1: count).
"""

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from qdarts.errors import DataError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
UBYTE = 0x08

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


def idx_path(folder: Path, stem: str) -> Path:
  """``folder/stem.gz`` if present, else the uncompressed ``folder/stem``."""
  gz = folder / f"{stem}.gz"
  return gz if gz.is_file() or not (folder / stem).is_file() else folder / stem


def has_idx_files(folder: Path) -> bool:
  """Whether ``folder`` holds the first IDX file of the set (the others are checked on load)."""
  return idx_path(folder, TRAIN_IMAGES).is_file()


def _read_bytes(path: Path) -> bytes:
  try:
    if path.suffix == ".gz":
      with gzip.open(path, "rb") as f:
        return f.read()
    return path.read_bytes()
  except FileNotFoundError as e:
    raise DataError(f"{path}: file not found (expected one of {', '.join(FILES)}, .gz)") from e
  except EOFError as e:
    raise DataError(f"{path}: truncated gzip file (ends before its data); download it again") from e
  except (OSError, zlib.error) as e:
    raise DataError(f"{path}: not a readable gzip file ({e})") from e


def read_idx(path: Path, magic: int) -> np.ndarray:
  """Reads one IDX file of unsigned bytes.

  Args:
    path: ``.gz`` or uncompressed IDX file.
    magic: the expected magic number (2051 images, 2049 labels).

  Returns:
    uint8 array of the header's shape.

  Raises:
    DataError: naming the file, on a truncated file, a wrong magic or a size mismatch.
  """
  raw = _read_bytes(path)
  ndim = magic & 0xFF
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise DataError(f"{path}: {len(raw)} bytes, shorter than an IDX header ({header} bytes)")
  (found,) = struct.unpack(">I", raw[:4])
  if found != magic:
    raise DataError(
      f"{path}: magic number {found}, expected {magic} "
      f"({'images' if magic == IMAGES_MAGIC else 'labels'} IDX file of unsigned bytes)"
    )
  dims = struct.unpack(f">{ndim}I", raw[4:header])
  size = int(np.prod(dims))
  if len(raw) - header != size:
    raise DataError(
      f"{path}: {len(raw) - header} data bytes, the header says {'x'.join(map(str, dims))} "
      f"= {size}; the file is truncated or corrupt"
    )
  return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def read_idx_split(
  folder: Path, images_stem: str, labels_stem: str, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
  """One split: images ``(N, rows, cols, 1)`` uint8 and labels ``(N,)`` int32.

  Raises:
    DataError: naming the file, when counts differ or a label is out of range.
  """
  images_path, labels_path = idx_path(folder, images_stem), idx_path(folder, labels_stem)
  images = read_idx(images_path, IMAGES_MAGIC)
  labels = read_idx(labels_path, LABELS_MAGIC)
  if len(images) != len(labels):
    raise DataError(
      f"{labels_path}: {len(labels)} labels for the {len(images)} images of {images_path.name}"
    )
  if labels.size and labels.max() >= num_classes:
    row = int(np.argmax(labels >= num_classes))
    raise DataError(
      f"{labels_path}: label {labels[row]} at row {row}, expected 0..{num_classes - 1}"
    )
  return images[..., None], labels.astype(np.int32)


def read_idx_dataset(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """``(x_train, y_train, x_test, y_test)`` of an MNIST-layout folder."""
  x_train, y_train = read_idx_split(folder, TRAIN_IMAGES, TRAIN_LABELS)
  x_test, y_test = read_idx_split(folder, TEST_IMAGES, TEST_LABELS)
  if x_train.shape[1:] != x_test.shape[1:]:
    raise DataError(
      f"{folder}: training images are {x_train.shape[1:3]}, test images {x_test.shape[1:3]}"
    )
  return x_train, y_train, x_test, y_test
