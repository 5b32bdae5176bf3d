"""Residual adds (MBConv SubNets) through the IR, the integer model and every export format.

The chain comes from ``search_spaces.mbconv`` (tests/export/conftest.py): three inverted
residual blocks with adds, weights at 2, 4 and 8 bits, 4- and 8-bit activations.
"""

import dataclasses
import importlib.util

import numpy as np
import onnx
import pytest

from qdarts.errors import ConfigError
from qdarts.export import (
  QAdd,
  QConv,
  export_c,
  export_onnx,
  integer_forward,
  integer_trace,
  reference_forward,
  residual_step,
  run_onnx,
  to_integer_chain,
  validate_chain,
)
from qdarts.export.c_export import build_c_runner, find_c_compiler, run_c_runner
from qdarts.export.chain_file import load_chain, save_chain
from qdarts.export.from_chain import graph_from_chain
from qdarts.export.graph_integer import integer_graph_trace, to_integer_graph
from qdarts.export.graph_onnx import run_graph_onnx_codes
from qdarts.export.integer_model import IntAdd, add_codes, quantize_input
from search_spaces.chain_net import ResidualAdd

STRICT = ("-std=c99", "-O1", "-Wall", "-Wextra", "-pedantic", "-Werror")
needs_cc = pytest.mark.skipif(find_c_compiler() is None, reason="no C compiler to build the C")
needs_litert = pytest.mark.skipif(
  importlib.util.find_spec("ai_edge_litert") is None, reason="ai-edge-litert is not installed"
)


def _adds(chain):
  return [(i, layer) for i, layer in enumerate(chain.layers) if isinstance(layer, QAdd)]


def test_quantized_layers_name_each_residual_add(mbconv_subnet):
  space, subnet, _ = mbconv_subnet
  named = subnet.quantized_layers(space.op_names)
  adds = [(n, m) for n, m in named if isinstance(m, ResidualAdd)]
  assert adds == [
    ("stage0.block0.mb3x3_e3.add", ResidualAdd("stage0.block0.mb3x3_e3.expand1x1")),
    ("stage0.block1.mb5x5_e1.add", ResidualAdd("stage0.block1.mb5x5_e1.dw5x5")),
    ("stage1.block1.mb5x5_e3.add", ResidualAdd("stage1.block1.mb5x5_e3.expand1x1")),
  ]


def test_chain_reads_the_adds_and_their_steps(mbconv_chain):
  chain, _ = mbconv_chain
  validate_chain(chain)
  adds = _adds(chain)
  assert [(i, a.skip) for i, a in adds] == [(4, 1), (7, 5), (14, 11)]
  assert sorted({layer.w_bits for layer in chain.layers if isinstance(layer, QConv)}) == [2, 4, 8]
  for i, add in adds:
    before = chain.layers[i - 1]
    assert isinstance(before, QConv) and not before.relu  # the linear project conv
    assert add.in_step == residual_step(chain.layers[add.skip], chain.layers[i + 1])


def test_residual_step_covers_the_range_that_matters():
  skip = QAdd("s", 0, in_step=0.1)  # only in_step / a_bits are read
  nxt = dataclasses.replace(skip, in_step=0.05)
  step = residual_step(skip, nxt)  # x_max = 25.5, y_max = 12.75
  assert step == pytest.approx(25.5 / 128) and -128 * step <= -25.5 and 127 * step >= 12.75


def test_integer_model_matches_the_oracle_with_adds(mbconv_chain):
  chain, x = mbconv_chain
  expected = reference_forward(chain, x, int32_bias=True)
  got = integer_forward(chain, x)
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
  ichain = to_integer_chain(chain)
  assert sum(isinstance(layer, IntAdd) for layer in ichain.layers) == 3


def test_add_codes_is_the_rescaled_sum():
  """One add on every (skip, h) code pair against the float equation, rounded half up."""
  from qdarts.export import QGlobalAvgPool, QLinear, QuantizedChain  # noqa: PLC0415

  conv = QConv(
    "c", np.ones((1, 1, 1, 1), np.float32), np.zeros(1, np.float32), np.ones(1, np.float32),
    8, in_step=0.037, a_bits=8, stride=1, padding=((0, 0), (0, 0)), relu=False,
  )  # fmt: skip
  chain = QuantizedChain(
    (
      conv,
      QAdd("add", skip=0, in_step=0.061),
      QGlobalAvgPool("gap", in_step=0.083),
      QLinear("fc", np.ones((1, 1), np.float32), np.zeros(1, np.float32), np.ones(1), 8, 1.0, 8),
    ),
    (1, 1, 1),
    1,
  )
  (add,) = [layer for layer in to_integer_chain(chain).layers if isinstance(layer, IntAdd)]
  skip, h = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
  skip, h = skip.reshape(-1, 1, 1, 1).astype(np.uint8), h.reshape(-1, 1, 1, 1).astype(np.uint8)
  got = add_codes(add, h, skip).astype(np.int64)
  real = (0.037 * skip.astype(np.float64) + 0.061 * (h.astype(np.float64) - 128)) / 0.083
  expected = np.clip(np.floor(real + 0.5), 0, 255)
  assert np.abs(got - expected).max() <= 1 and np.mean(got != expected) < 1e-3


def test_onnx_adds_are_exact_int32_and_the_model_is_the_ort_form(mbconv_chain, tmp_path):
  """The residual adds run in int32 (no QLinearAdd, whose rounding differs between CPUs); every
  tensor is the integer model's ``"ort"`` form at "extended" and within a logit LSB of the
  single-rounding model unfused."""
  chain, x = mbconv_chain
  path = export_onnx(chain, tmp_path / "model.onnx")
  igraph = to_integer_graph(graph_from_chain(chain), rounding="ort")
  expected = integer_graph_trace(igraph, x)
  got = run_graph_onnx_codes(path, igraph, x, "extended")
  for name in expected.keys() & got.keys():
    np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
  ichain = to_integer_chain(chain)
  step = ichain.layers[-1].logit_scale
  optimized = tmp_path / "extended.onnx"
  logits = run_onnx(path, x, optimization="disabled")
  assert np.abs(logits - integer_forward(ichain, x)).max() / step.min() <= 1.0
  run_onnx(path, x, optimization="extended", optimized_model_path=optimized)
  ops = [node.op_type for node in onnx.load(optimized).graph.node]
  assert "QLinearAdd" not in ops and ops.count("Add") >= 3


@needs_litert
def test_tflite_within_one_code_of_the_integer_model(mbconv_chain, tmp_path):
  from ai_edge_litert import schema_py_generated as fb  # noqa: PLC0415

  from qdarts.export.tflite import export_tflite, logit_quantization, run_tflite  # noqa: PLC0415

  chain, x = mbconv_chain
  path = export_tflite(chain, tmp_path / "model.tflite")
  model = fb.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
  codes = [model.operatorCodes[op.opcodeIndex].builtinCode for op in model.subgraphs[0].operators]
  assert codes.count(fb.BuiltinOperator.ADD) == 3
  scale, zero_point = logit_quantization(chain.layers[-1])
  for kernels, rounding in (("builtin", "double"), ("xnnpack", "single")):
    ichain = to_integer_chain(chain, rounding=rounding)
    got = np.round(run_tflite(path, x, kernels=kernels) / scale) + zero_point
    expected = np.clip(np.round(integer_forward(ichain, x) / scale) + zero_point, -128, 127)
    assert np.abs(got - expected).max() <= 1, kernels


@needs_cc
@pytest.mark.parametrize("rounding", ["single", "double"])
def test_c_runtime_is_bit_exact_with_adds(mbconv_chain, tmp_path, rounding):
  chain, x = mbconv_chain
  ichain = to_integer_chain(chain, rounding=rounding)
  export_c(ichain, tmp_path)
  source = (tmp_path / "model.c").read_text()
  assert source.count("QDARTS_OP_ADD") == 3 and ".save_input = 1" in source
  result = run_c_runner(build_c_runner(tmp_path, flags=STRICT), quantize_input(ichain, x))
  trace = integer_trace(ichain, x)
  np.testing.assert_array_equal(result.accumulators, trace.accumulators)
  expected = np.concatenate([c.reshape(len(x), -1) for c in trace.codes[1:]], axis=1)
  np.testing.assert_array_equal(result.trace, expected)


def test_chain_file_round_trip_keeps_the_adds(mbconv_chain, tmp_path):
  chain, x = mbconv_chain
  loaded = load_chain(save_chain(chain, tmp_path / "subnet.npz"))
  assert _adds(loaded) == _adds(chain)
  np.testing.assert_array_equal(reference_forward(loaded, x), reference_forward(chain, x))


@pytest.mark.parametrize(
  ("index", "changes", "message"),
  [
    (4, {"skip": 4}, r"layer 4 .*skip must index an earlier layer .* in 0\.\.3, got 4"),
    (7, {"skip": 2}, r"layer 7 .*skip must index an earlier layer .* in 5\.\.6, got 2"),
    (14, {"skip": 12}, r"layer 14 .*skip layer 12 reads \(4, 4, 24\), but the add's input is"),
    (4, {"a_bits": 4}, "a QAdd needs a_bits 8"),
  ],
)
def test_invalid_adds_are_named(mbconv_chain, index, changes, message):
  chain, _ = mbconv_chain
  layers = list(chain.layers)
  layers[index] = dataclasses.replace(layers[index], **changes)
  with pytest.raises(ValueError, match=message):
    validate_chain(dataclasses.replace(chain, layers=tuple(layers)))


def test_corrupt_add_in_a_subnet_file_is_named(mbconv_chain, tmp_path):
  chain, _ = mbconv_chain
  layers = list(chain.layers)
  layers[4] = dataclasses.replace(layers[4], skip=9)
  path = save_chain(dataclasses.replace(chain, layers=tuple(layers)), tmp_path / "subnet.npz")
  with pytest.raises(ConfigError, match=r"subnet.npz: invalid SubNet .*layer 4"):
    load_chain(path)
