"""ONNX QDQ export of a QuantizedChain against the float fake-quant reference."""

import dataclasses
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from qdarts.errors import RunFolderError
from qdarts.export import (
  QConv,
  QGlobalAvgPool,
  QLinear,
  QuantizedChain,
  export_onnx,
  reference_forward,
  run_onnx,
)
from qdarts.export.from_chain import graph_from_chain
from qdarts.export.graph_integer import integer_graph_trace, to_integer_graph
from qdarts.export.graph_onnx import run_graph_onnx_codes
from qdarts.export.integer_model import integer_trace, to_integer_chain
from qdarts.export.ir import _conv2d_nhwc
from qdarts.export.onnx import build_model

INPUT_SHAPE = (8, 8, 1)
NUM_CLASSES = 10


def _conv(rng, name, cin, cout, k, stride, groups, w_bits, a_bits, in_step, pad):
  weight = rng.normal(0.0, 1.0 / np.sqrt(k * k * cin // groups), (k, k, cin // groups, cout))
  return QConv(
    name=name,
    weight=weight.astype(np.float32),
    bias=rng.normal(0.0, 0.1, cout).astype(np.float32),
    w_step=(np.abs(weight).reshape(-1, cout).max(0) / (2 ** (w_bits - 1) - 1)).astype(np.float32),
    w_bits=w_bits,
    in_step=in_step,
    a_bits=a_bits,
    stride=stride,
    padding=pad,
    groups=groups,
  )


def make_chain(w_bits=(8, 4, 2, 8), a_bits=(8, 4, 2, 8, 8), seed=0):
  """8x8x1 → conv3x3(4) → depthwise 3x3 stride 2 → conv1x1(8) → GAP → linear(10).

  Activation steps cover a fixed range at each bit-width, jittered so that no two steps have a
  simple ratio (which would put averages exactly on rounding ties).
  """
  rng = np.random.default_rng(seed)

  def step(bits, top):
    return float(top * rng.uniform(0.9, 1.1) / (2**bits - 1))

  no_pad, pad1, pad_end = ((0, 0), (0, 0)), ((1, 1), (1, 1)), ((0, 1), (0, 1))
  layers = (
    _conv(rng, "conv0", 1, 4, 3, 1, 1, w_bits[0], a_bits[0], step(a_bits[0], 1.0), pad1),
    _conv(rng, "dw1", 4, 4, 3, 2, 4, w_bits[1], a_bits[1], step(a_bits[1], 0.6), pad_end),
    _conv(rng, "pw2", 4, 8, 1, 1, 1, w_bits[2], a_bits[2], step(a_bits[2], 0.8), no_pad),
    QGlobalAvgPool("gap", in_step=step(a_bits[3], 1.0), a_bits=a_bits[3]),
  )
  weight = rng.normal(0.0, 0.5, (8, NUM_CLASSES)).astype(np.float32)
  fc = QLinear(
    "fc",
    weight,
    rng.normal(0.0, 0.1, NUM_CLASSES).astype(np.float32),
    (np.abs(weight).max(0) / (2 ** (w_bits[3] - 1) - 1)).astype(np.float32),
    w_bits[3],
    in_step=step(a_bits[4], 0.5),
    a_bits=a_bits[4],
  )
  return QuantizedChain(layers + (fc,), INPUT_SHAPE, NUM_CLASSES, {"dataset": "toy"})


# name: (w_bits of conv0, dw1, pw2, fc; a_bits of conv0, dw1, pw2, gap, fc)
BIT_CASES = {
  "all8": ((8, 8, 8, 8), (8, 8, 8, 8, 8)),
  "mixed_a": ((8, 4, 2, 8), (8, 4, 2, 8, 8)),
  "mixed_b": ((2, 4, 8, 4), (2, 4, 8, 2, 4)),
  "low": ((4, 2, 4, 2), (8, 1, 2, 4, 2)),
}


def _inputs(n=64, seed=1):
  return np.random.default_rng(seed).uniform(0.0, 1.0, (n, *INPUT_SHAPE)).astype(np.float32)


def _initializers(path):
  return {t.name: t for t in onnx.load(path).graph.initializer}


def test_conv2d_nhwc_matches_direct_loop():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 7, 6, 4))
  w = rng.normal(size=(3, 2, 2, 6))  # groups=2: cin/groups=2, cout=6
  pad, stride, groups = ((1, 0), (2, 1)), 2, 2
  y = _conv2d_nhwc(x, w, stride, pad, groups)
  xp = np.pad(x, ((0, 0), pad[0], pad[1], (0, 0)))
  expected = np.zeros_like(y)
  for o in range(6):
    g = o // 3
    for i in range(y.shape[1]):
      for j in range(y.shape[2]):
        patch = xp[:, i * stride : i * stride + 3, j * stride : j * stride + 2, 2 * g : 2 * g + 2]
        expected[:, i, j, o] = np.einsum("nhwc,hwc->n", patch, w[..., o])
  assert y.shape == (2, 3, 4, 6)  # Ho = (7 + 1 - 3) // 2 + 1, Wo = (6 + 3 - 2) // 2 + 1
  np.testing.assert_allclose(y, expected, atol=1e-12)


@pytest.mark.parametrize("optimization", ["disabled", "extended"])
@pytest.mark.parametrize("case", sorted(BIT_CASES))
def test_onnx_matches_reference(tmp_path, case, optimization):
  chain = make_chain(*BIT_CASES[case])
  path = export_onnx(chain, tmp_path / "model.onnx")
  x = _inputs()
  logits = run_onnx(path, x, optimization=optimization)
  # The oracle with biases on the int32 grid, as exported: what remains is float32 order.
  expected = reference_forward(chain, x, int32_bias=True)
  assert logits.shape == (64, NUM_CLASSES) and logits.dtype == np.float32
  np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
  assert np.mean(logits.argmax(1) == expected.argmax(1)) >= 0.99


def test_all_8bit_onnx_matches_float_bias_reference(tmp_path):
  chain = make_chain(*BIT_CASES["all8"])
  x = _inputs()
  logits = run_onnx(export_onnx(chain, tmp_path / "model.onnx"), x)
  expected = reference_forward(chain, x)
  # An 8-bit bias grid s_a·s_w is fine: int32 rounding moves logits by far less than a code.
  np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-2 * np.abs(expected).max())
  assert np.mean(logits.argmax(1) == expected.argmax(1)) >= 0.99


def test_dynamic_batch(tmp_path):
  chain = make_chain()
  path = export_onnx(chain, tmp_path / "model.onnx")
  for n in (1, 3):
    x = _inputs(n, seed=n)
    expected = reference_forward(chain, x, int32_bias=True)
    np.testing.assert_allclose(run_onnx(path, x), expected, atol=1e-4 * np.abs(expected).max())


def test_all_8bit_runs_integer_kernels_in_ort(tmp_path):
  path = export_onnx(make_chain(*BIT_CASES["all8"]), tmp_path / "model.onnx")
  optimized = tmp_path / "optimized.onnx"
  run_onnx(path, _inputs(4), optimization="extended", optimized_model_path=optimized)
  ops = [node.op_type for node in onnx.load(optimized).graph.node]
  assert ops.count("QLinearConv") == 3
  assert "ReduceSum" in ops and "QGemm" in ops  # the global pool sums in int32
  assert not {"Conv", "FusedConv", "Relu", "Gemm", "GlobalAveragePool"} & set(ops), ops


@pytest.mark.parametrize("case", sorted(BIT_CASES))
def test_onnx_runtime_computes_the_ort_form_code_for_code(case):
  """A chain's model is its graph's: every tensor as the integer model's ``"ort"`` form."""
  chain = make_chain(*BIT_CASES[case])
  graph = graph_from_chain(chain)
  igraph = to_integer_graph(graph, rounding="ort")
  x = _inputs(256)
  expected = integer_graph_trace(igraph, x)
  for level in ("extended", "all"):
    got = run_graph_onnx_codes(build_model(chain), igraph, x, level)
    for name, codes in got.items():
      if name != "logits":
        np.testing.assert_array_equal(codes, expected[name], err_msg=f"{level} {name}")


def test_graph_of_a_chain_is_the_chain_integer_model():
  """graph_from_chain keeps the chain's integer semantics: equal codes and accumulators, in
  single and double rounding (what lets one ONNX writer serve both)."""
  x = _inputs(256)
  for case in sorted(BIT_CASES):
    chain = make_chain(*BIT_CASES[case])
    for rounding in ("single", "double"):
      trace = integer_trace(to_integer_chain(chain, rounding=rounding), x)
      graph = integer_graph_trace(to_integer_graph(graph_from_chain(chain), rounding=rounding), x)
      for i, previous in enumerate(chain.layers[:-1], start=1):  # layer i reads previous's
        np.testing.assert_array_equal(graph[previous.name], trace.codes[i])
      np.testing.assert_array_equal(graph[chain.layers[-1].name], trace.accumulators)


def test_low_bit_weights_are_stored_as_int4(tmp_path):
  w4 = make_chain((4, 4, 2, 4), (8, 8, 8, 8, 8))
  w8 = make_chain((8, 8, 8, 8), (8, 8, 8, 8, 8))
  inits4 = _initializers(export_onnx(w4, tmp_path / "w4.onnx"))
  inits8 = _initializers(export_onnx(w8, tmp_path / "w8.onnx"))
  bytes4 = bytes8 = 0
  for layer in w4.layers:
    if isinstance(layer, QGlobalAvgPool):
      continue
    t4, t8 = inits4[f"{layer.name}.w_codes"], inits8[f"{layer.name}.w_codes"]
    assert t4.data_type == TensorProto.INT4 and t8.data_type == TensorProto.INT8
    assert inits4[f"{layer.name}.w_zero_point"].data_type == TensorProto.INT4
    count = int(np.prod(t4.dims))
    assert len(t4.raw_data) == (count + 1) // 2 and len(t8.raw_data) == count
    bytes4, bytes8 = bytes4 + len(t4.raw_data), bytes8 + len(t8.raw_data)
    # The stored codes (unpacked low nibble first) are the quantizer's codes, output channels first.
    qp = 2 ** (layer.w_bits - 1) - 1
    codes = np.clip(np.round(layer.weight / layer.w_step), -qp, qp)
    codes = codes.transpose(3, 2, 0, 1) if isinstance(layer, QConv) else codes.T
    np.testing.assert_array_equal(numpy_helper.to_array(t4).astype(np.int8), codes)
  assert bytes4 <= bytes8 / 2 + 4  # one padding nibble per tensor at most


def test_model_versions_metadata_and_signature(tmp_path):
  chain = make_chain()
  path = export_onnx(chain, tmp_path / "model.onnx")
  model = onnx.load(path)
  onnx.checker.check_model(model, full_check=True)
  assert model.ir_version == 10
  assert [(o.domain, o.version) for o in model.opset_import] == [("", 21)]
  meta = {p.key: p.value for p in model.metadata_props}
  assert meta["dataset"] == "toy"
  assert json.loads(meta["qdarts.layers"]) == [
    {"name": "conv0", "w_bits": 8, "a_bits": 8},
    {"name": "dw1", "w_bits": 4, "a_bits": 4},
    {"name": "pw2", "w_bits": 2, "a_bits": 2},
    {"name": "gap", "w_bits": None, "a_bits": 8},
    {"name": "fc", "w_bits": 8, "a_bits": 8},
  ]
  (inp,), (out,) = model.graph.input, model.graph.output
  assert (inp.name, _dims(inp)) == ("input", ["N", 1, 8, 8])  # NCHW
  assert (out.name, _dims(out)) == ("logits", ["N", NUM_CLASSES])


def _dims(value_info):
  return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _replace_layer(chain, index, **changes):
  layers = list(chain.layers)
  layers[index] = dataclasses.replace(layers[index], **changes)
  return dataclasses.replace(chain, layers=tuple(layers))


INVALID = {
  "w_bits": (1, {"w_bits": 9}, r"layer 1 'dw1': w_bits"),
  "a_bits": (3, {"a_bits": 0}, r"layer 3 'gap': a_bits"),
  "in_step": (2, {"in_step": 0.0}, r"layer 2 'pw2': in_step"),
  "w_step": (4, {"w_step": -np.ones(NUM_CLASSES, np.float32)}, r"layer 4 'fc': w_step"),
  "cin": (2, {"weight": np.ones((1, 1, 3, 8), np.float32)}, r"layer 2 'pw2': weight"),
  "linear_cin": (4, {"weight": np.ones((7, NUM_CLASSES), np.float32)}, r"layer 4 'fc': weight"),
  "bias_shape": (0, {"bias": np.zeros(5, np.float32)}, r"layer 0 'conv0': bias"),
  "duplicate": (2, {"name": "dw1"}, r"layer 2 'dw1': layer names must be unique"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_chain_raises_naming_the_layer(tmp_path, case):
  index, changes, message = INVALID[case]
  chain = _replace_layer(make_chain(), index, **changes)
  path = tmp_path / "out" / "model.onnx"
  with pytest.raises(ValueError, match=message):
    export_onnx(chain, path)
  assert not path.exists() and not any(tmp_path.rglob("*"))
  with pytest.raises(ValueError, match=message):
    reference_forward(chain, _inputs(1))


def test_num_classes_mismatch_raises(tmp_path):
  chain = dataclasses.replace(make_chain(), num_classes=11)
  with pytest.raises(ValueError, match="10 outputs, but num_classes is 11"):
    export_onnx(chain, tmp_path / "model.onnx")


def test_layer_after_the_linear_raises(tmp_path):
  chain = make_chain()
  chain = dataclasses.replace(chain, layers=chain.layers + (chain.layers[-1],))
  with pytest.raises(ValueError, match="layer 4 'fc': the QLinear must be the last layer"):
    export_onnx(chain, tmp_path / "model.onnx")


def test_reserved_metadata_key_raises(tmp_path):
  chain = dataclasses.replace(make_chain(), metadata={"qdarts.layers": "[]"})
  with pytest.raises(ValueError, match="'qdarts.layers': the 'qdarts.' prefix is reserved"):
    export_onnx(chain, tmp_path / "model.onnx")


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
  path = tmp_path / "model.onnx"

  def fail(src, dst):
    raise OSError("disk full")

  monkeypatch.setattr("qdarts.export.onnx.os.replace", fail)
  with pytest.raises(RunFolderError, match=r"model\.onnx: cannot write \(OSError\)"):
    export_onnx(make_chain(), path)
  assert list(tmp_path.iterdir()) == []


def test_run_onnx_rejects_unknown_optimization(tmp_path):
  path = export_onnx(make_chain(), tmp_path / "model.onnx")
  with pytest.raises(ValueError, match="'fast' is not one of disabled, basic, extended, all"):
    run_onnx(path, _inputs(1), optimization="fast")
