"""Shared builders of tests/export: an MBConv SubNet with residual adds, as an export chain."""

import jax
import numpy as np
import pytest
from flax import nnx

from qdarts.export.from_subnet import chain_from_subnet
from search_spaces import Choice, MBConvSpace

MBCONV_SHAPE = (8, 8, 1)
MBCONV_CLASSES = 10
# stage0 (4→4, stride 1): two residual blocks; stage1: 4→8 stride 2 (no add), then a residual
# 8→8 block with 4-bit activations. Weight bits 4, 2, 8, 4: mixed, INT4 and 2-bit containers.
MBCONV_CHOICES = (
  Choice("mb3x3_e3", 4, 8),
  Choice("mb5x5_e1", 2, 8),
  Choice("mb3x3_e3", 8, 8),
  Choice("mb5x5_e3", 4, 4),
)


@pytest.fixture(scope="session")
def mbconv_subnet():
  """``(space, subnet, x)``: the calibrated MBConv SubNet of ``MBCONV_CHOICES`` and its
  calibration batch ``x`` (float32 ``(64, 8, 8, 1)`` in [0, 1))."""
  space = MBConvSpace(
    MBCONV_SHAPE,
    MBCONV_CLASSES,
    stem_channels=4,
    channels=(4, 8),
    strides=(1, 2),
    repeats=(2, 2),
    kernels=(3, 5),
    expansions=(1, 3),
    head_channels=6,
  )
  subnet = space.build((2, 4, 8), (4, 8), nnx.Rngs(0), list(MBCONV_CHOICES))
  x = jax.random.uniform(jax.random.key(4), (64, *MBCONV_SHAPE))
  subnet.calibrate(x)
  return space, subnet, np.asarray(x, np.float32)


@pytest.fixture(scope="session")
def mbconv_chain(mbconv_subnet):
  """``(chain, x)``: the export chain of :func:`mbconv_subnet` (three residual adds)."""
  space, subnet, x = mbconv_subnet
  named = subnet.quantized_layers(space.op_names)
  return chain_from_subnet(named, MBCONV_SHAPE, MBCONV_CLASSES, {"dataset": "synthetic"}), x
