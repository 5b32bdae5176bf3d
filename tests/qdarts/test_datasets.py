"""Dataset files: CIFAR-10 pickles and IDX gzip, their lookup, download and the loaded splits."""

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from qdarts.config import DataConfig, load_config
from qdarts.data import load_dataset
from qdarts.datasets import download, locate
from qdarts.datasets.cifar import _reconstruct, read_cifar10, read_cifar_batch
from qdarts.datasets.download import Remote, download_dataset
from qdarts.datasets.idx import read_idx_dataset
from qdarts.errors import ConfigError, DataError

# ----- fixture files in the official formats ------------------------------------------------


class Py2Pickler(pickle._Pickler):
  """Writes bytes as Python 2 ``str`` opcodes and numpy's old module path, as the official
  CIFAR-10 batches (pickled by Python 2) do; Python 3's protocol 2 would call _codecs.encode."""

  dispatch = pickle._Pickler.dispatch.copy()

  def save_py2_str(self, obj: bytes) -> None:
    if len(obj) < 256:
      self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
    else:
      self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
    self.memoize(obj)

  dispatch[bytes] = save_py2_str

  def save_global(self, obj, name=None):
    if obj is _reconstruct:
      self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
      self.memoize(obj)
      return
    super().save_global(obj, name)


def py2_pickle(obj) -> bytes:
  out = io.BytesIO()
  Py2Pickler(out, protocol=2).dump(obj)
  return out.getvalue()


def cifar_rows(n: int, seed: int) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def write_cifar_batch(path: Path, data, labels, **extra) -> None:
  batch = {b"batch_label": b"training batch", b"labels": labels, b"data": data, **extra}
  path.write_bytes(py2_pickle(batch))


def write_cifar_folder(folder: Path, per_batch: int = 4) -> Path:
  """A cifar-10-batches-py folder with ``per_batch`` images per batch, labels i % 10."""
  folder.mkdir(parents=True)
  names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
  for seed, name in enumerate(names):
    labels = [(seed + i) % 10 for i in range(per_batch)]
    write_cifar_batch(folder / name, cifar_rows(per_batch, seed), labels)
  (folder / "batches.meta").write_bytes(py2_pickle({b"label_names": [b"airplane"] * 10}))
  return folder


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
  return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def write_idx_folder(folder: Path, n_train: int = 40, n_test: int = 12, side: int = 6) -> Path:
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  for stem, n in (("train", n_train), ("t10k", n_test)):
    images = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
    labels = np.arange(n) % 10
    (folder / f"{stem}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images, 2051)))
    (folder / f"{stem}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels, 2049)))
  return folder


@pytest.fixture
def no_data_env(monkeypatch, tmp_path):
  """No $QDARTS_DATA_DIR, an empty home (so an empty download cache), no Debian paths."""
  monkeypatch.delenv("QDARTS_DATA_DIR", raising=False)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  monkeypatch.setattr(locate, "DEBIAN_DIRS", {})


# ----- CIFAR-10 -----------------------------------------------------------------------------


def test_cifar_batches_read_as_nhwc_uint8(tmp_path):
  folder = write_cifar_folder(tmp_path / "cifar-10-batches-py")
  assert b"numpy.core.multiarray\n_reconstruct" in (folder / "test_batch").read_bytes()
  x, y = read_cifar_batch(folder / "data_batch_2")
  rows = cifar_rows(4, 1)
  assert x.shape == (4, 32, 32, 3) and x.dtype == np.uint8 and y.dtype == np.int32
  # row layout: 1024 R, 1024 G, 1024 B, each row-major
  assert x[2, 5, 7, 0] == rows[2, 5 * 32 + 7] and x[2, 5, 7, 2] == rows[2, 2048 + 5 * 32 + 7]
  assert y.tolist() == [1, 2, 3, 4]
  x_train, y_train, x_test, y_test = read_cifar10(folder)
  assert x_train.shape == (20, 32, 32, 3) and x_test.shape == (4, 32, 32, 3)
  assert y_test.tolist() == [5, 6, 7, 8]


class _Boom:
  def __reduce__(self):
    return (os.getcwd, ())


@pytest.mark.parametrize(
  ("content", "message"),
  [
    (lambda: py2_pickle({b"data": _Boom(), b"labels": []}), "refusing global posix.getcwd"),
    (lambda: py2_pickle(np.zeros(3))[:40], "not a CIFAR-10 python batch"),
    (lambda: b"\x1f\x8b not a pickle", "not a CIFAR-10 python batch"),
    (lambda: py2_pickle([1, 2]), "holds a list, expected a dict"),
    (lambda: py2_pickle({b"images": cifar_rows(2, 0)}), "keys images; expected data and labels"),
    (lambda: py2_pickle({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), "100 values"),
    (lambda: py2_pickle({b"data": np.zeros((2, 3072)), b"labels": [0, 1]}), "data is float64"),
    (lambda: py2_pickle({b"data": cifar_rows(2, 0), b"labels": [0]}), "1 labels for 2 images"),
    (lambda: py2_pickle({b"data": cifar_rows(2, 0), b"labels": [0, 10]}), "label 10 at row 1"),
  ],
)
def test_foreign_or_corrupt_cifar_batch_is_rejected_naming_the_file(tmp_path, content, message):
  path = tmp_path / "data_batch_1"
  path.write_bytes(content())
  with pytest.raises(DataError, match=message) as err:
    read_cifar_batch(path)
  assert str(path) in str(err.value)


def test_missing_cifar_batch_is_named(tmp_path):
  folder = write_cifar_folder(tmp_path / "cifar-10-batches-py")
  (folder / "data_batch_3").unlink()
  with pytest.raises(DataError, match="data_batch_3: file not found"):
    read_cifar10(folder)


# ----- IDX (MNIST, Fashion-MNIST) -----------------------------------------------------------


def test_idx_folder_reads_images_and_labels(tmp_path):
  folder = write_idx_folder(tmp_path / "fashion-mnist")
  x_train, y_train, x_test, y_test = read_idx_dataset(folder)
  assert x_train.shape == (40, 6, 6, 1) and x_test.shape == (12, 6, 6, 1)
  assert x_train.dtype == np.uint8 and y_train.dtype == np.int32
  assert y_test.tolist() == [i % 10 for i in range(12)]
  raw = gzip.decompress((folder / "train-images-idx3-ubyte.gz").read_bytes())
  np.testing.assert_array_equal(x_train[..., 0].ravel(), np.frombuffer(raw[16:], np.uint8))


def _replace(folder: Path, name: str, data: bytes) -> Path:
  path = folder / name
  path.write_bytes(data)
  return path


@pytest.mark.parametrize(
  ("name", "corrupt", "message"),
  [
    ("train-images-idx3-ubyte.gz", lambda b: b[: len(b) // 2], "truncated gzip file"),
    ("train-images-idx3-ubyte.gz", lambda b: b"plain bytes, no gzip", "not a readable gzip"),
    (
      "train-images-idx3-ubyte.gz",
      lambda b: gzip.compress(gzip.decompress(b)[:-7]),
      "data bytes, the header says 40x6x6 = 1440",
    ),
    (
      "train-labels-idx1-ubyte.gz",
      lambda b: gzip.compress(idx_bytes(np.zeros((40, 6, 6)), 2051)),
      "magic number 2051, expected 2049",
    ),
    (
      "train-labels-idx1-ubyte.gz",
      lambda b: gzip.compress(idx_bytes(np.zeros(39), 2049)),
      "39 labels for the 40 images",
    ),
    (
      "t10k-labels-idx1-ubyte.gz",
      lambda b: gzip.compress(idx_bytes(np.full(12, 10), 2049)),
      "label 10 at row 0, expected 0..9",
    ),
    ("t10k-images-idx3-ubyte.gz", lambda b: gzip.compress(b"\0\0"), "shorter than an IDX header"),
  ],
)
def test_corrupt_idx_file_is_rejected_naming_the_file(tmp_path, name, corrupt, message):
  folder = write_idx_folder(tmp_path / "mnist")
  path = _replace(folder, name, corrupt((folder / name).read_bytes()))
  with pytest.raises(DataError, match=message) as err:
    read_idx_dataset(folder)
  assert str(path) in str(err.value)


# ----- lookup -------------------------------------------------------------------------------


def test_lookup_accepts_the_shared_layout_and_the_folder_itself(tmp_path, no_data_env):
  write_cifar_folder(tmp_path / "root" / "cifar10" / "cifar-10-batches-py")
  write_idx_folder(tmp_path / "root" / "fashion-mnist")
  root = str(tmp_path / "root")
  assert locate.find_dataset("cifar10", root) == tmp_path / "root/cifar10/cifar-10-batches-py"
  assert locate.find_dataset("fashion_mnist", root) == tmp_path / "root/fashion-mnist"
  direct = str(tmp_path / "root/cifar10/cifar-10-batches-py")
  assert locate.find_dataset("cifar10", direct) == Path(direct)
  assert locate.find_dataset("mnist", root) is None


def test_lookup_order_is_data_dir_then_env_then_cache(tmp_path, no_data_env, monkeypatch):
  for name in ("a", "b", "home/.cache/qdarts/datasets"):
    write_idx_folder(tmp_path / name / "mnist")
  monkeypatch.setenv("QDARTS_DATA_DIR", str(tmp_path / "b"))
  assert locate.find_dataset("mnist", str(tmp_path / "a")) == tmp_path / "a/mnist"
  assert locate.find_dataset("mnist", None) == tmp_path / "b/mnist"
  monkeypatch.delenv("QDARTS_DATA_DIR")
  assert locate.find_dataset("mnist", None) == tmp_path / "home/.cache/qdarts/datasets/mnist"


def test_missing_dataset_says_where_it_looked_and_how_to_get_it(tmp_path, no_data_env):
  with pytest.raises(DataError) as err:
    load_dataset(DataConfig(dataset="cifar10", data_dir=str(tmp_path / "nowhere")), 0)
  message = str(err.value)
  assert f"{tmp_path / 'nowhere'} (data.data_dir, no such folder)" in message
  assert str(tmp_path / "home/.cache/qdarts/datasets") in message
  assert "data.download=true" in message and "--data-dir" in message


# ----- download -----------------------------------------------------------------------------


def _remotes(folder: Path, names, sha=None) -> tuple[Remote, ...]:
  return tuple(
    Remote(
      name,
      ((folder / name).as_uri(),),
      sha or hashlib.sha256((folder / name).read_bytes()).hexdigest(),
    )
    for name in names
  )


def test_download_fetches_verifies_and_unpacks_cifar(tmp_path):
  write_cifar_folder(tmp_path / "src" / "cifar-10-batches-py")
  archive = tmp_path / "served" / "cifar-10-python.tar.gz"
  archive.parent.mkdir()
  with tarfile.open(archive, "w:gz") as tar:
    tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
  remotes = _remotes(archive.parent, ["cifar-10-python.tar.gz"])
  folder = download_dataset("cifar10", tmp_path / "cache", remotes=remotes)
  assert folder == tmp_path / "cache/cifar10/cifar-10-batches-py"
  assert read_cifar10(folder)[0].shape == (20, 32, 32, 3)
  assert sorted(p.name for p in folder.parent.iterdir()) == ["cifar-10-batches-py"]


def test_download_with_a_wrong_checksum_fails_and_leaves_nothing(tmp_path):
  served = write_idx_folder(tmp_path / "served")
  names = sorted(p.name for p in served.iterdir())
  with pytest.raises(DataError, match="SHA-256 [0-9a-f]{64} does not match the expected 0+") as e:
    download_dataset("mnist", tmp_path / "cache", remotes=_remotes(served, names, "0" * 64))
  assert served.as_uri() in str(e.value)
  assert list((tmp_path / "cache" / "mnist").iterdir()) == []


def test_load_with_download_true_fetches_into_data_dir(tmp_path, no_data_env, monkeypatch):
  served = write_idx_folder(tmp_path / "served")
  names = [f"{s}.gz" for s in download.idx.FILES]
  monkeypatch.setitem(download.REMOTES, "fashion_mnist", _remotes(served, names))
  cfg = DataConfig(dataset="fashion_mnist", batch_size=4, download=True, data_dir=str(tmp_path))
  data = load_dataset(cfg, 0)
  assert (tmp_path / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").is_file()
  assert len(data.y_test) == 12


# ----- loaded datasets ----------------------------------------------------------------------


def test_real_layout_loads_uint8_halves_and_the_official_test_split(tmp_path, no_data_env):
  write_idx_folder(tmp_path / "fashion-mnist", n_train=41)
  data = load_dataset(DataConfig(dataset="fashion_mnist", batch_size=4, data_dir=str(tmp_path)), 0)
  assert data.x_weight.dtype == np.uint8 and data.x_weight.shape == (20, 6, 6, 1)
  assert len(data.y_arch) == 20 and len(data.y_test) == 12 and data.num_classes == 10
  assert data.input_shape == (6, 6, 1) and not data.input_spec.augment  # off by default
  x_test = read_idx_dataset(tmp_path / "fashion-mnist")[2]
  np.testing.assert_array_equal(data.x_test, x_test)  # official order, untouched
  assert len(data.mean) == len(data.std) == 1 and 0.4 < data.mean[0] < 0.6
  small = DataConfig("fashion_mnist", 4, data_dir=str(tmp_path), subset=10, test_subset=5)
  capped = load_dataset(small, 0)
  assert len(capped.y_weight) == len(capped.y_arch) == 5 and len(capped.y_test) == 5


def test_cifar_augments_by_default_and_the_config_can_turn_it_off(tmp_path, no_data_env):
  write_cifar_folder(tmp_path / "cifar10" / "cifar-10-batches-py")
  cfg = DataConfig(dataset="cifar10", batch_size=4, data_dir=str(tmp_path))
  spec = load_dataset(cfg, 0).input_spec
  assert (spec.augment, spec.pad, spec.flip) == (True, 4, True)
  off = DataConfig(dataset="cifar10", batch_size=4, data_dir=str(tmp_path), augment=False)
  assert not load_dataset(off, 0).input_spec.augment
  assert not load_dataset(cfg, 0).eval_spec.augment


def test_digits_become_uint8_and_the_input_stays_in_0_1():
  data = load_dataset(DataConfig(dataset="digits"), 0)
  assert data.x_weight.dtype == np.uint8 and int(data.x_weight.max()) == 255
  x = np.asarray(data.to_input(data.x_test))
  assert x.dtype == np.float32 and x.min() == 0 and x.max() == 1
  assert (len(data.y_weight), len(data.y_test)) == (719, 359)  # test_fraction 0.2, halves


def test_data_config_fields_are_validated(quickstart_path):
  cfg = load_config(quickstart_path, ["data.dataset=cifar10", "data.subset=500"])
  assert (cfg.data.dataset, cfg.data.subset, cfg.data.augment) == ("cifar10", 500, None)
  with pytest.raises(ConfigError, match="quickstart.yaml: data.subset: expected a positive"):
    load_config(quickstart_path, ["data.subset=0"])
  with pytest.raises(ConfigError, match="data.augment: expected true or false or null"):
    load_config(quickstart_path, ["data.augment=maybe"])


def test_cli_data_dir_overrides_the_config(tmp_path, no_data_env, monkeypatch, capsys):
  from qdarts.cli import main

  monkeypatch.chdir(tmp_path)
  missing = tmp_path / "no-data-here"
  assert main(["search", "--no-cache", "--data-dir", str(missing), "data.dataset=mnist"]) == 2
  err = capsys.readouterr().err
  assert f"{missing} (data.data_dir, no such folder)" in err and len(err.splitlines()) == 1
  assert not (tmp_path / "runs").exists()


def test_exported_model_records_its_input(finished_run):
  import onnx

  run_dir, _ = finished_run
  props = {p.key: p.value for p in onnx.load(run_dir / "model.onnx").metadata_props}
  assert props["input"].startswith("float32 NCHW = pixels/255")
  assert props["input_normalized"] == "false" and props["input_mean"]


# ----- the real datasets (CI: $QDARTS_DATA_DIR points at ../shared/datasets) -----------------

DATA_DIR = os.environ.get("QDARTS_DATA_DIR")


def _real(name: str) -> Path:
  if not DATA_DIR or not Path(DATA_DIR).is_dir():
    pytest.skip("real-data test: set QDARTS_DATA_DIR to a folder with cifar10/ and fashion-mnist/")
  folder = locate.find_dataset(name, DATA_DIR)
  if folder is None:
    pytest.skip(f"real-data test: no {name} under QDARTS_DATA_DIR={DATA_DIR}")
  return folder


@pytest.mark.parametrize(
  ("name", "reader", "shape", "sizes"),
  [
    ("cifar10", read_cifar10, (32, 32, 3), (50000, 10000)),
    ("fashion_mnist", read_idx_dataset, (28, 28, 1), (60000, 10000)),
  ],
)
def test_real_dataset_sizes_and_labels(name, reader, shape, sizes):
  x_train, y_train, x_test, y_test = reader(_real(name))
  assert (len(x_train), len(x_test)) == (len(y_train), len(y_test)) == sizes
  assert x_train.shape[1:] == x_test.shape[1:] == shape and x_train.dtype == np.uint8
  for y in (y_train, y_test):
    assert sorted(np.unique(y).tolist()) == list(range(10))
