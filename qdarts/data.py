"""Datasets as device-resident uint8 arrays, split for the bilevel search.

The training split is halved: one half for the weight steps, the other for the architecture
steps (DARTS); the test split is never seen by the search or the fine-tuning. ``digits`` and
``synthetic`` hold out ``data.test_fraction`` of their samples; ``cifar10``, ``fashion_mnist``
and ``mnist`` use their official test split.

Images stay uint8 NHWC on the device; the jitted steps turn each batch into the float32 network
input (and augment training batches) with :func:`qdarts.datasets.prepare_batch`.
"""

from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp
import numpy as np

from qdarts.config import DataConfig
from qdarts.datasets import (
  InputSpec,
  augment,
  locate_dataset,
  prepare_batch,
  read_cifar10,
  read_idx_dataset,
  to_network_input,
)
from qdarts.errors import DataError

__all__ = [
  "Dataset",
  "InputSpec",
  "augment",
  "channel_stats",
  "epoch_batches",
  "load_dataset",
  "prepare_batch",
  "to_network_input",
]


@dataclass(frozen=True)
class AugmentDefaults:
  """A dataset's augmentation when the config leaves it unset (None)."""

  on: bool
  pad: int  # crop padding, pixels
  flip: bool  # horizontal flips keep the class (not for digits)


AUGMENT_DEFAULTS = {
  "digits": AugmentDefaults(on=False, pad=1, flip=False),
  "synthetic": AugmentDefaults(on=False, pad=1, flip=False),
  "cifar10": AugmentDefaults(on=True, pad=4, flip=True),
  "fashion_mnist": AugmentDefaults(on=False, pad=2, flip=True),
  "mnist": AugmentDefaults(on=False, pad=2, flip=False),
}


@dataclass(frozen=True)
class Dataset:
  """Images NHWC uint8 and integer labels, already on the device.

  Attributes:
    name: dataset name (recorded in results and exported models).
    x_weight, y_weight: half of the training split, for weight steps.
    x_arch, y_arch: the other half, for architecture steps.
    x_test, y_test: held-out split.
    num_classes: number of labels.
    input_spec: how a training batch becomes the network input (augmentation included);
      :attr:`eval_spec` is the same without augmentation.
  """

  name: str
  x_weight: jax.Array
  y_weight: jax.Array
  x_arch: jax.Array
  y_arch: jax.Array
  x_test: jax.Array
  y_test: jax.Array
  num_classes: int
  input_spec: InputSpec

  @property
  def input_shape(self) -> tuple[int, int, int]:
    return tuple(self.x_test.shape[1:])

  @property
  def x_train(self) -> jax.Array:
    return jnp.concatenate([self.x_weight, self.x_arch])

  @property
  def y_train(self) -> jax.Array:
    return jnp.concatenate([self.y_weight, self.y_arch])

  @property
  def mean(self) -> tuple[float, ...]:
    """Per-channel mean of the training pixels / 255."""
    return self.input_spec.mean

  @property
  def std(self) -> tuple[float, ...]:
    """Per-channel standard deviation of the training pixels / 255."""
    return self.input_spec.std

  @property
  def eval_spec(self) -> InputSpec:
    return replace(self.input_spec, augment=False)

  def to_input(self, x: jax.Array) -> jax.Array:
    """uint8 images → float32 network input, never augmented (evaluation, calibration, ONNX)."""
    return to_network_input(x, self.input_spec)


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean and standard deviation of uint8 ``(N, H, W, C)`` pixels / 255.

  Exact, from a 256-bin histogram per channel (no float copy of the images).
  """
  levels = np.arange(256) / 255.0
  means, stds = [], []
  for c in range(x.shape[-1]):
    counts = np.bincount(x[..., c].ravel(), minlength=256)
    p = counts / counts.sum()
    mean = float(p @ levels)
    means.append(mean)
    stds.append(float(np.sqrt(max(p @ (levels - mean) ** 2, 0.0))))
  return tuple(means), tuple(stds)


def _digits() -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's bundled 8×8 digits (1,797 images, values 0..16 scaled to 0..255)."""
  from sklearn.datasets import load_digits  # noqa: PLC0415 (slow import, only when used)

  d = load_digits()
  return np.round(d.images[..., None] * (255 / 16)).astype(np.uint8), d.target.astype(np.int32)


def _synthetic(seed: int, n: int = 1024, hw: int = 8, classes: int = 4) -> tuple:
  """Class-conditional blobs: each class a fixed random 8×8 template plus noise (for tests)."""
  rng = np.random.default_rng(seed)
  templates = rng.uniform(0, 1, (classes, hw, hw, 1)).astype(np.float32)
  y = rng.integers(0, classes, n).astype(np.int32)
  x = np.clip(templates[y] + rng.normal(0, 0.25, (n, hw, hw, 1)), 0, 1)
  return np.round(x * 255).astype(np.uint8), y


def _held_out(x: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple:
  """Shuffles with ``seed``; the first ``fraction`` is the test split, the rest training."""
  order = np.random.default_rng(seed).permutation(len(x))
  x, y = x[order], y[order]
  n_test = int(round(len(x) * fraction))
  return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def _read_splits(cfg: DataConfig, seed: int) -> tuple[np.ndarray, ...]:
  """``(x_train, y_train, x_test, y_test)`` on the host, the training split shuffled by
  ``seed`` and capped at ``cfg.subset`` (the first N of the official order, for real data)."""
  if cfg.dataset in ("digits", "synthetic"):
    x, y = _digits() if cfg.dataset == "digits" else _synthetic(seed)
    x_train, y_train, x_test, y_test = _held_out(x, y, cfg.test_fraction, seed)
    return x_train[: cfg.subset], y_train[: cfg.subset], x_test, y_test
  if cfg.dataset not in AUGMENT_DEFAULTS:  # the config loader only lets known names through
    raise DataError(f"data.dataset: unknown dataset {cfg.dataset!r}")
  folder = locate_dataset(cfg.dataset, cfg.data_dir, cfg.download)
  reader = read_cifar10 if cfg.dataset == "cifar10" else read_idx_dataset
  x_train, y_train, x_test, y_test = reader(folder)
  x_train, y_train = x_train[: cfg.subset], y_train[: cfg.subset]
  order = np.random.default_rng(seed).permutation(len(x_train))
  return x_train[order], y_train[order], x_test, y_test


def input_spec_for(cfg: DataConfig, mean: tuple, std: tuple) -> InputSpec:
  """The training input spec: the config's augmentation, else the dataset's default."""
  default = AUGMENT_DEFAULTS[cfg.dataset]
  return InputSpec(
    mean=mean,
    std=std,
    augment=default.on if cfg.augment is None else cfg.augment,
    pad=default.pad if cfg.augment_pad is None else cfg.augment_pad,
    flip=default.flip if cfg.augment_flip is None else cfg.augment_flip,
  )


def load_dataset(cfg: DataConfig, seed: int) -> Dataset:
  """Loads ``cfg.dataset``, shuffles with ``seed``, splits test / weight half / arch half.

  Raises:
    DataError: the files are missing or malformed (naming the file), or a training half is
      smaller than one batch.
  """
  x_train, y_train, x_test, y_test = _read_splits(cfg, seed)
  x_test, y_test = x_test[: cfg.test_subset], y_test[: cfg.test_subset]
  n_half = len(x_train) // 2
  if n_half < cfg.batch_size:
    raise DataError(
      f"data.batch_size: {cfg.batch_size} is larger than each training half "
      f"({n_half} samples of {cfg.dataset})"
    )
  if len(x_test) == 0:
    raise DataError(f"data: the test split of {cfg.dataset} is empty")
  mean, std = channel_stats(x_train)
  num_classes = 10 if cfg.dataset != "synthetic" else int(max(y_train.max(), y_test.max())) + 1
  put = jax.device_put
  return Dataset(
    name=cfg.dataset,
    x_test=put(x_test),
    y_test=put(y_test),
    x_weight=put(x_train[:n_half]),
    y_weight=put(y_train[:n_half]),
    x_arch=put(x_train[n_half : 2 * n_half]),
    y_arch=put(y_train[n_half : 2 * n_half]),
    num_classes=num_classes,
    input_spec=input_spec_for(cfg, mean, std),
  )


def epoch_batches(n: int, batch_size: int, key: jax.Array) -> jax.Array:
  """``(steps, batch_size)`` indices of one shuffled epoch; the last partial batch is dropped
  (a different batch shape would recompile the step)."""
  steps = n // batch_size
  return jax.random.permutation(key, n)[: steps * batch_size].reshape(steps, batch_size)
