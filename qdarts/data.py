"""Datasets as device-resident arrays, split for the bilevel search.

The training split is halved: one half for the weight steps, the other for the architecture
steps (DARTS); the test split is never seen by the search or the fine-tuning.
"""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from qdarts.config import DataConfig
from qdarts.errors import DataError


@dataclass(frozen=True)
class Dataset:
  """Images NHWC float32 in [0, 1] and integer labels, already on the device.

  Attributes:
    name: dataset name (recorded in results and exported models).
    x_weight, y_weight: half of the training split, for weight steps.
    x_arch, y_arch: the other half, for architecture steps.
    x_test, y_test: held-out split.
    num_classes: number of labels.
  """

  name: str
  x_weight: jax.Array
  y_weight: jax.Array
  x_arch: jax.Array
  y_arch: jax.Array
  x_test: jax.Array
  y_test: jax.Array
  num_classes: int

  @property
  def input_shape(self) -> tuple[int, int, int]:
    return tuple(self.x_test.shape[1:])

  @property
  def x_train(self) -> jax.Array:
    return jnp.concatenate([self.x_weight, self.x_arch])

  @property
  def y_train(self) -> jax.Array:
    return jnp.concatenate([self.y_weight, self.y_arch])


def _digits() -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's bundled 8×8 digits (1,797 images, values 0..16), no network needed."""
  from sklearn.datasets import load_digits  # noqa: PLC0415 (slow import, only when used)

  d = load_digits()
  return (d.images[..., None] / 16.0).astype(np.float32), d.target.astype(np.int32)


def _synthetic(seed: int, n: int = 1024, hw: int = 8, classes: int = 4) -> tuple:
  """Class-conditional blobs: each class a fixed random 8×8 template plus noise (for tests)."""
  rng = np.random.default_rng(seed)
  templates = rng.uniform(0, 1, (classes, hw, hw, 1)).astype(np.float32)
  y = rng.integers(0, classes, n).astype(np.int32)
  x = np.clip(templates[y] + rng.normal(0, 0.25, (n, hw, hw, 1)), 0, 1).astype(np.float32)
  return x, y


def load_dataset(cfg: DataConfig, seed: int) -> Dataset:
  """Loads ``cfg.dataset``, shuffles with ``seed``, splits test / weight half / arch half."""
  if cfg.dataset == "digits":
    x, y = _digits()
  elif cfg.dataset == "synthetic":
    x, y = _synthetic(seed)
  else:  # the config loader only lets known names through
    raise DataError(f"data.dataset: unknown dataset {cfg.dataset!r}")
  order = np.random.default_rng(seed).permutation(len(x))
  x, y = x[order], y[order]
  n_test = int(round(len(x) * cfg.test_fraction))
  n_half = (len(x) - n_test) // 2
  if n_half < cfg.batch_size:
    raise DataError(
      f"data.batch_size: {cfg.batch_size} is larger than each training half "
      f"({n_half} samples of {cfg.dataset})"
    )
  put = jax.device_put
  return Dataset(
    name=cfg.dataset,
    x_test=put(x[:n_test]),
    y_test=put(y[:n_test]),
    x_weight=put(x[n_test : n_test + n_half]),
    y_weight=put(y[n_test : n_test + n_half]),
    x_arch=put(x[n_test + n_half : n_test + 2 * n_half]),
    y_arch=put(y[n_test + n_half : n_test + 2 * n_half]),
    num_classes=int(y.max()) + 1,
  )


def epoch_batches(n: int, batch_size: int, key: jax.Array) -> jax.Array:
  """``(steps, batch_size)`` indices of one shuffled epoch; the last partial batch is dropped
  (a different batch shape would recompile the step)."""
  steps = n // batch_size
  return jax.random.permutation(key, n)[: steps * batch_size].reshape(steps, batch_size)
