"""A :class:`~qdarts.export.ir.QuantizedChain` (tiny and MBConv SubNets) as a
:class:`~qdarts.export.graph_ir.QuantizedGraph`, so that the DAG writers serve chains too.

The integer semantics are the chain's (:mod:`qdarts.export.integer_model`): each layer's input
quantizer becomes the grid of the tensor that the layer before it produces. Per layer:

- ``QConv`` → ``GConv`` onto the next layer's input grid (unsigned; the signed int8 grid
  ``s_h`` where a ``QAdd`` follows). A ReLU before an unsigned grid is its clamp at 0; before an
  add's signed grid it is a ``GRequant`` onto an unsigned 8-bit grid of the same step (codes
  ``max(c, 0)``, exactly the chain's clamp at the zero point).
- ``QAdd`` → ``GAdd`` of the previous conv's output and the input tensor of layer ``skip``.
- ``QGlobalAvgPool`` → ``GGlobalAvgPool``; ``QLinear`` → ``GLinear``.

Tensor names are the layer names (the chain's ONNX tensors were ``<layer>.in_q``, the input of
a layer; here ``<layer>.q`` is its output).
"""

import dataclasses

import numpy as np

from qdarts.export.graph_ir import (
  INPUT,
  GAdd,
  GConv,
  GGlobalAvgPool,
  GLinear,
  GRequant,
  Grid,
  QuantizedGraph,
)
from qdarts.export.ir import QAdd, QConv, QGlobalAvgPool, QuantizedChain, validate_chain

ADD_INPUT_BITS = 8  # a QAdd's input quantizer is signed int8


def _input_grid(layer) -> Grid:
  """The grid of a layer's input: unsigned at its bits, or an add's signed int8 grid."""
  if isinstance(layer, QAdd):
    return Grid(float(np.float32(layer.in_step)), ADD_INPUT_BITS, signed=True)
  return Grid(float(np.float32(layer.in_step)), int(layer.a_bits), signed=False)


def graph_from_chain(chain: QuantizedChain) -> QuantizedGraph:
  """The graph of ``chain`` (see the module docstring); the chain's metadata carries over.

  Raises:
    ValueError: the chain is invalid (the message names the layer).
  """
  validate_chain(chain)
  nodes = []
  produced = [INPUT]  # produced[i]: the tensor that layer i reads
  for i, layer in enumerate(chain.layers):
    src = produced[-1]
    nxt = chain.layers[i + 1] if i + 1 < len(chain.layers) else None
    if isinstance(layer, QConv):
      out = _input_grid(nxt)
      relu_on_signed = layer.relu and out.signed
      name = f"{layer.name}.pre_relu" if relu_on_signed else layer.name
      nodes.append(
        GConv(
          name,
          (src,),
          np.asarray(layer.weight, np.float32),
          np.asarray(layer.bias, np.float32),
          np.asarray(layer.w_step, np.float32),
          int(layer.w_bits),
          out,
          stride=int(layer.stride),
          padding=tuple(tuple(int(p) for p in side) for side in layer.padding),
          groups=int(layer.groups),
        )  # fmt: skip
      )
      if relu_on_signed:
        nodes.append(GRequant(layer.name, (name,), dataclasses.replace(out, signed=False)))
    elif isinstance(layer, QAdd):
      nodes.append(GAdd(layer.name, (src, produced[layer.skip]), _input_grid(nxt)))
    elif isinstance(layer, QGlobalAvgPool):
      nodes.append(GGlobalAvgPool(layer.name, (src,), _input_grid(nxt)))
    else:  # validate_chain: the one QLinear is last
      nodes.append(
        GLinear(
          layer.name,
          (src,),
          np.asarray(layer.weight, np.float32),
          np.asarray(layer.bias, np.float32),
          np.asarray(layer.w_step, np.float32),
          int(layer.w_bits),
        )  # fmt: skip
      )
    produced.append(layer.name)
  shape = tuple(int(d) for d in chain.input_shape)
  return QuantizedGraph(
    tuple(nodes), shape, _input_grid(chain.layers[0]), chain.num_classes, dict(chain.metadata)
  )
