"""Reads a trained SubNet's quantized modules into the export IR (numpy arrays only)."""

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
from flax import nnx

from qdarts.export.ir import QAdd, QConv, QGlobalAvgPool, QLinear, QuantizedChain, residual_step
from search_spaces import QAvgPool, QDense
from search_spaces import QConv as QConvModule
from search_spaces.chain_net import ResidualAdd


def _arr(v: nnx.Variable) -> np.ndarray:
  return np.asarray(v[...], np.float32)


def _layer(name: str, m: nnx.Module, index: dict[str, int]):
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
  if isinstance(m, ResidualAdd):
    if m.skip not in index:
      raise TypeError(f"{name}: residual add of an unknown earlier layer {m.skip!r}")
    return QAdd(name=name, skip=index[m.skip], in_step=float("nan"))  # step: see below
  raise TypeError(f"no export rule for {type(m).__name__} ({name})")


def chain_from_subnet(
  named_layers: Sequence[tuple[str, nnx.Module]],
  input_shape: tuple[int, int, int],
  num_classes: int,
  metadata: Mapping[str, str],
) -> QuantizedChain:
  """The :class:`QuantizedChain` of a fixed SubNet's ``quantized_layers()``.

  A :class:`~search_spaces.chain_net.ResidualAdd` entry becomes a :class:`QAdd` whose signed
  input step is :func:`~qdarts.export.ir.residual_step` of its skip layer and the layer after
  it (the fake-quant SubNet adds in float; the export needs a step there).
  """
  index: dict[str, int] = {}
  layers = []
  for i, (name, module) in enumerate(named_layers):
    layers.append(_layer(name, module, index))
    index[name] = i
  for i, layer in enumerate(layers):
    if isinstance(layer, QAdd) and i + 1 < len(layers):
      step = residual_step(layers[layer.skip], layers[i + 1])
      layers[i] = dataclasses.replace(layer, in_step=step)
  return QuantizedChain(
    layers=tuple(layers),
    input_shape=tuple(input_shape),
    num_classes=num_classes,
    metadata=dict(metadata),
  )
