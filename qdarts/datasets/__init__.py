"""Dataset files (CIFAR-10 pickles, MNIST-layout IDX), their lookup and download, and the
in-step conversion of uint8 batches to the network input (crop + flip augmentation)."""

from qdarts.datasets.augment import (
  InputSpec,
  augment,
  crop_and_flip,
  prepare_batch,
  to_network_input,
)
from qdarts.datasets.cifar import read_cifar10, read_cifar_batch
from qdarts.datasets.download import download_dataset
from qdarts.datasets.idx import read_idx, read_idx_dataset
from qdarts.datasets.locate import find_dataset, locate_dataset

__all__ = [
  "InputSpec",
  "augment",
  "crop_and_flip",
  "download_dataset",
  "find_dataset",
  "locate_dataset",
  "prepare_batch",
  "read_cifar10",
  "read_cifar_batch",
  "read_idx",
  "read_idx_dataset",
  "to_network_input",
]
