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


# --- a DARTS final network (every op kind, mixed 2/4/8-bit weights) ---------------------------

DARTS_SHAPE = (8, 8, 3)
DARTS_CLASSES = 10
# 3 cells: cell 0 normal; cells 1, 2 reduce (cell 2's pre0 is a factorized reduce). Normal: sep
# 3x3 (2-bit), identity skip, dil 5x5 (4-bit), avg pool (stride 1). Reduce: skip as a factorized
# reduce (8-bit), max pool (stride 2), sep 5x5 (4-bit, 4-bit activations), dil 3x3 (2-bit).
DARTS_NORMAL = (
  ("sep_conv_3x3", 0, 2, 4),
  ("skip_connect", 1, None, None),
  ("dil_conv_5x5", 2, 4, 8),
  ("avg_pool_3x3", 0, None, None),
)
DARTS_REDUCE = (
  ("skip_connect", 0, 8, 8),
  ("max_pool_3x3", 1, None, None),
  ("sep_conv_5x5", 2, 4, 4),
  ("dil_conv_3x3", 1, 2, 8),
)


@pytest.fixture(scope="session")
def darts_net():
  """``(net, x)``: the calibrated final network of ``DARTS_NORMAL``, ``DARTS_REDUCE`` (3 cells,
  4 channels) after two training-mode forwards (running statistics moved), in ``eval()``;
  ``x`` float32 ``(64, 8, 8, 3)`` in [0, 1)."""
  from search_spaces.darts_final import build_final  # noqa: PLC0415
  from search_spaces.darts_genotype import Genotype  # noqa: PLC0415

  genotype = Genotype(DARTS_NORMAL, (2, 3), DARTS_REDUCE, (2, 3))
  net = build_final(genotype, DARTS_SHAPE, DARTS_CLASSES, nnx.Rngs(0), cells=3, init_channels=4)
  x = jax.random.uniform(jax.random.key(3), (64, *DARTS_SHAPE))
  net.calibrate(x)
  forward = nnx.jit(lambda m, x: m(x))
  for _ in range(2):
    forward(net, x)
  net.eval()
  return net, np.asarray(x, np.float32)


@pytest.fixture(scope="session")
def darts_graph(darts_net):
  """``(graph, x)``: the export graph of :func:`darts_net`."""
  from qdarts.export.from_darts import graph_from_darts  # noqa: PLC0415

  net, x = darts_net
  return graph_from_darts(net, DARTS_SHAPE, DARTS_CLASSES, {"dataset": "synthetic"}), x
