"""Reads a trained SubNet's quantized modules into the export IR (numpy arrays only)."""

from collections.abc import Mapping, Sequence

import numpy as np
from flax import nnx

from qdarts.export.ir import QConv, QGlobalAvgPool, QLinear, QuantizedChain
from search_spaces import QAvgPool, QDense
from search_spaces import QConv as QConvModule


def _arr(v: nnx.Variable) -> np.ndarray:
  return np.asarray(v[...], np.float32)


def _layer(name: str, m: nnx.Module):
  if isinstance(m, QConvModule):
    return QConv(
      name=name,
      weight=_arr(m.kernel),
      bias=_arr(m.bias),
      w_step=_arr(m.w_steps)[0],
      w_bits=m.w_bits[0],
      in_step=float(_arr(m.a_steps)[0]),
      a_bits=m.a_bits[0],
      stride=m.stride,
      padding=tuple(tuple(p) for p in m.padding),
      groups=m.groups,
      relu=m.relu,
    )
  if isinstance(m, QAvgPool):
    return QGlobalAvgPool(name=name, in_step=float(_arr(m.a_steps)[0]), a_bits=m.a_bits[0])
  if isinstance(m, QDense):
    return QLinear(
      name=name,
      weight=_arr(m.kernel),
      bias=_arr(m.bias),
      w_step=_arr(m.w_steps)[0],
      w_bits=m.bits[0],
      in_step=float(_arr(m.a_steps)[0]),
      a_bits=m.bits[0],
    )
  raise TypeError(f"no export rule for {type(m).__name__} ({name})")


def chain_from_subnet(
  named_layers: Sequence[tuple[str, nnx.Module]],
  input_shape: tuple[int, int, int],
  num_classes: int,
  metadata: Mapping[str, str],
) -> QuantizedChain:
  """The :class:`QuantizedChain` of a fixed SubNet's ``quantized_layers()``."""
  return QuantizedChain(
    layers=tuple(_layer(n, m) for n, m in named_layers),
    input_shape=tuple(input_shape),
    num_classes=num_classes,
    metadata=dict(metadata),
  )
