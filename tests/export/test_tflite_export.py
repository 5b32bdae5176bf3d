"""TFLite (LiteRT) export of a QuantizedChain against the fake-quant oracle and the integer model.

Measured on these chains (LiteRT 2.3.0, 1,024 inputs, logits in int8 codes of their scale):
the all-8-bit chain matches ``reference_forward(int32_bias=True)`` exactly with XNNPACK and
within one code with the builtin kernels. Chains with 1- or 2-bit activations differ by more
than one code on up to 8% of logit codes (up to 28 codes apart), because LiteRT's builtin
kernels round twice (gemmlowp) and one code of a 2-bit activation is a large step for the next
layer; the argmax agrees on ≥ 99.9%. So the tests check each layer against the oracle *given
LiteRT's own input codes* (≤ 1 code everywhere), the builtin kernels against the integer model
with double rounding (0 codes), and the whole chain end to end where that is meaningful.
"""

import dataclasses
import json
import warnings

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed (extra 'tflite')")

from ai_edge_litert import schema_py_generated as fb  # noqa: E402
from ai_edge_litert.interpreter import Interpreter, OpResolverType  # noqa: E402

from qdarts.errors import RunFolderError  # noqa: E402
from qdarts.export import (  # noqa: E402
  QConv,
  QGlobalAvgPool,
  QLinear,
  QuantizedChain,
  reference_forward,
)
from qdarts.export.ir import _conv2d_nhwc, _fake_quant_weight, _round_bias  # noqa: E402
from qdarts.export.tflite import (  # noqa: E402
  export_tflite,
  logit_quantization,
  read_metadata,
  run_tflite,
)
from quant.integer import unpack_int4, weight_codes  # noqa: E402

INPUT_SHAPE = (8, 8, 1)
NUM_CLASSES = 10
PAD1, PAD_END, NO_PAD = ((1, 1), (1, 1)), ((0, 1), (0, 1)), ((0, 0), (0, 0))

# name: (w_bits of conv0, dw1, pw2, fc; a_bits of conv0, dw1, pw2, gap, fc)
BIT_CASES = {
  "all8": ((8, 8, 8, 8), (8, 8, 8, 8, 8)),
  "mixed_a": ((8, 4, 2, 8), (8, 4, 2, 8, 8)),
  "mixed_b": ((2, 4, 8, 4), (2, 4, 8, 2, 4)),
  "low": ((4, 2, 4, 2), (8, 1, 2, 4, 2)),
}


def _conv(rng, name, cin, cout, k, stride, groups, w_bits, a_bits, in_step, pad):
  weight = rng.normal(0.0, 1.0 / np.sqrt(k * k * cin // groups), (k, k, cin // groups, cout))
  qp = 2 ** (w_bits - 1) - 1
  return QConv(
    name=name,
    weight=weight.astype(np.float32),
    bias=rng.normal(0.0, 0.1, cout).astype(np.float32),
    w_step=(np.abs(weight).reshape(-1, cout).max(0) / qp).astype(np.float32),
    w_bits=w_bits,
    in_step=in_step,
    a_bits=a_bits,
    stride=stride,
    padding=pad,
    groups=groups,
  )


def make_chain(w_bits, a_bits, seed=0, pads=(PAD1, PAD_END, NO_PAD), depth=1):
  """8x8x1 → conv3x3(4) → depthwise 3x3 stride 2 (×depth) → conv1x1(8) → GAP → linear(10).

  Activation steps cover a fixed range per bit-width, jittered so no two have a simple ratio.
  """
  rng = np.random.default_rng(seed)

  def step(bits, top):
    return float(top * rng.uniform(0.9, 1.1) / (2**bits - 1))

  layers = (
    _conv(rng, "conv0", 1, 4, 3, 1, 1, w_bits[0], a_bits[0], step(a_bits[0], 1.0), pads[0]),
    _conv(rng, "dw1", 4, 4 * depth, 3, 2, 4, w_bits[1], a_bits[1], step(a_bits[1], 0.6), pads[1]),
    _conv(rng, "pw2", 4 * depth, 8, 1, 1, 1, w_bits[2], a_bits[2], step(a_bits[2], 0.8), pads[2]),
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


def _chain(case: str) -> QuantizedChain:
  if case == "explicit_pad":  # neither VALID nor SAME: PAD ops before conv0 and dw1
    return make_chain(*BIT_CASES["mixed_a"], pads=(((2, 1), (0, 2)), ((1, 0), (0, 1)), NO_PAD))
  if case == "depth2_linear_pw":  # depthwise with depth multiplier 2; pw2 without ReLU
    chain = make_chain(*BIT_CASES["mixed_b"], depth=2)
    layers = list(chain.layers)
    layers[2] = dataclasses.replace(layers[2], relu=False)
    return dataclasses.replace(chain, layers=tuple(layers))
  return make_chain(*BIT_CASES[case])


LAYER_CASES = sorted(BIT_CASES) + ["explicit_pad", "depth2_linear_pw"]


def _inputs(n=64, seed=1):
  return np.random.default_rng(seed).uniform(0.0, 1.0, (n, *INPUT_SHAPE)).astype(np.float32)


def _litert_tensors(path, x) -> dict[str, np.ndarray]:
  """Every tensor of one run on LiteRT's builtin kernels (no delegate), by name."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # "preserve_all_tensors is for debugging"
    interpreter = Interpreter(
      model_path=str(path),
      num_threads=1,
      experimental_preserve_all_tensors=True,
      experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
  (inp,) = interpreter.get_input_details()
  interpreter.resize_tensor_input(inp["index"], list(x.shape), strict=True)
  interpreter.allocate_tensors()
  interpreter.set_tensor(inp["index"], x)
  interpreter.invoke()
  return {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_tensor_details()}


def _input_codes(tensors, chain: QuantizedChain, index: int) -> np.ndarray:
  """Unsigned codes ``u = q + 128`` of layer ``index``'s quantized input, as LiteRT has them."""
  layer = chain.layers[index]
  source = f"{layer.name}.in" if index == 0 else chain.layers[index - 1].name
  name = f"{source}.clamp" if layer.a_bits < 8 else (source if index == 0 else f"{source}.out")
  return tensors[name].astype(np.int64) + 128


def _layer_oracle(layer, codes: np.ndarray) -> np.ndarray:
  """The fake-quant oracle's float64 output of one layer from its input codes (bias on int32)."""
  xq = np.float64(np.float32(layer.in_step)) * codes
  if isinstance(layer, QGlobalAvgPool):
    return xq.mean(axis=(1, 2))
  wq = _fake_quant_weight(layer.weight, layer.w_step, layer.w_bits)
  if isinstance(layer, QLinear):
    return xq @ wq + _round_bias(layer)
  y = _conv2d_nhwc(xq, wq, layer.stride, layer.padding, layer.groups) + _round_bias(layer)
  return np.maximum(y, 0.0) if layer.relu else y


def _logit_codes(logits, layer: QLinear) -> np.ndarray:
  scale, zero_point = logit_quantization(layer)
  return np.clip(np.round(np.asarray(logits, np.float64) / scale) + zero_point, -128, 127)


def _model(path) -> "fb.ModelT":
  return fb.ModelT.InitFromPackedBuf(path.read_bytes(), 0)


def _tensors_by_name(model) -> dict[str, "fb.TensorT"]:
  return {t.name.decode(): t for t in model.subgraphs[0].tensors}


@pytest.mark.parametrize("case", LAYER_CASES)
def test_every_layer_within_one_code_of_the_fake_quant_oracle(tmp_path, case):
  chain = _chain(case)
  x = _inputs()
  tensors = _litert_tensors(export_tflite(chain, tmp_path / "m.tflite"), x)
  np.testing.assert_array_equal(  # QUANTIZE: the first quantizer, exactly
    _input_codes(tensors, chain, 0),
    np.clip(np.round(x / np.float32(chain.layers[0].in_step)), 0, 2 ** chain.layers[0].a_bits - 1),
  )
  for index, layer in enumerate(chain.layers):
    y = _layer_oracle(layer, _input_codes(tensors, chain, index))
    if isinstance(layer, QLinear):  # the int8 logits, in codes of their scale
      got = tensors[f"{layer.name}.out"].astype(np.int64)
      expected = _logit_codes(y, layer)
    else:  # the next layer's input codes, clamped to its bits by MINIMUM below 8
      nxt = chain.layers[index + 1]
      got = _input_codes(tensors, chain, index + 1)
      step = np.float64(np.float32(nxt.in_step))
      expected = np.clip(np.round(y / step), 0, 2**nxt.a_bits - 1)
      assert got.max() <= 2**nxt.a_bits - 1, layer.name
    assert got.shape == expected.shape, layer.name
    assert np.abs(got - expected).max() <= 1, layer.name


def _ruy_requantize(acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
  """LiteRT's builtin FULLY_CONNECTED requantization, measured: two roundings, as gemmlowp,
  but the final shift rounds ties toward +∞ (``(x + 2^(e−1)) >> e``) rather than away from 0.

  It shows on negative logits only; the convolutions' outputs are clamped at code 0 first.
  """
  a = acc.astype(np.int64) << np.maximum(shift, 0)
  ab = a * multiplier
  high = np.where(ab >= 0, (ab + 2**30) >> 31, -((2**30 - 1 - ab) >> 31))  # nearest, ties away
  e = np.maximum(-shift, 0)
  return np.where(e > 0, (high + (np.int64(1) << np.maximum(e - 1, 0))) >> e, high)


@pytest.mark.parametrize("case", LAYER_CASES)
def test_builtin_kernels_equal_the_integer_model_with_double_rounding(tmp_path, case):
  integer_model = pytest.importorskip("qdarts.export.integer_model")
  chain = _chain(case)
  x = _inputs()
  tensors = _litert_tensors(export_tflite(chain, tmp_path / "m.tflite"), x)
  trace = integer_model.integer_trace(integer_model.to_integer_chain(chain, rounding="double"), x)
  for index in range(len(chain.layers)):
    np.testing.assert_array_equal(_input_codes(tensors, chain, index), trace.codes[index])
  fc = chain.layers[-1]
  scale, zero_point = logit_quantization(fc)
  real = np.float64(np.float32(fc.in_step)) * np.asarray(fc.w_step, np.float32) / scale
  multiplier, shift = (
    np.array(v, np.int64)
    for v in zip(*(integer_model.quantize_multiplier(float(m)) for m in real), strict=True)
  )
  logit_codes = _ruy_requantize(trace.accumulators, multiplier, shift) + zero_point
  np.testing.assert_array_equal(tensors[f"{fc.name}.out"], np.clip(logit_codes, -128, 127))


@pytest.mark.parametrize("kernels", ["xnnpack", "builtin"])
def test_all_8bit_logits_within_one_code_end_to_end(tmp_path, kernels):
  chain = _chain("all8")
  x = _inputs(256, seed=2)
  logits = run_tflite(export_tflite(chain, tmp_path / "m.tflite"), x, kernels=kernels)
  assert logits.shape == (256, NUM_CLASSES) and logits.dtype == np.float32
  expected = reference_forward(chain, x, int32_bias=True)
  fc = chain.layers[-1]
  assert np.abs(_logit_codes(logits, fc) - _logit_codes(expected, fc)).max() <= 1
  assert np.mean(logits.argmax(1) == reference_forward(chain, x).argmax(1)) >= 0.99


@pytest.mark.parametrize("kernels", ["xnnpack", "builtin"])
@pytest.mark.parametrize("case", LAYER_CASES)
def test_predictions_agree_with_the_oracle(tmp_path, case, kernels):
  chain = _chain(case)
  x = _inputs(256, seed=2)
  logits = run_tflite(export_tflite(chain, tmp_path / "m.tflite"), x, kernels=kernels)
  expected = reference_forward(chain, x, int32_bias=True)
  assert np.mean(logits.argmax(1) == expected.argmax(1)) >= 0.99


@pytest.mark.parametrize("case", LAYER_CASES)
def test_xnnpack_with_int8_filters_computes_single_rounding(tmp_path, case):
  """INT8 filters (the default) put every conv in XNNPACK, LiteRT's default runtime, which
  requantizes once in float32: its logit codes equal the single-rounding reference's. With
  INT4 filters the ≤ 4-bit convs fall back to the builtin kernels' double rounding (measured:
  84% equal for mixed_a, up to 18 codes apart for low)."""
  chain = _chain(case)
  x = _inputs(256, seed=2)
  logits = run_tflite(export_tflite(chain, tmp_path / "m.tflite"), x, kernels="xnnpack")
  expected = reference_forward(chain, x, int32_bias=True)
  fc = chain.layers[-1]
  np.testing.assert_array_equal(_logit_codes(logits, fc), _logit_codes(expected, fc))


def test_export_and_verify_records_xnnpack(tmp_path):
  formats = pytest.importorskip("qdarts.export.formats")
  x = _inputs(256, seed=2)
  record = formats.export_and_verify(_chain("mixed_a"), tmp_path, ["tflite"], x)["tflite"]
  assert record["filters"] == "int8" and record["prediction_agreement"] == 1.0
  assert record["xnnpack_prediction_agreement"] == 1.0
  assert record["xnnpack_max_logit_diff_lsb"] == 0.0


@pytest.mark.parametrize("kernels", ["xnnpack", "builtin"])
def test_dynamic_batch(tmp_path, kernels):
  chain = _chain("mixed_a")
  path = export_tflite(chain, tmp_path / "m.tflite")
  x = _inputs(4, seed=5)
  full = _logit_codes(run_tflite(path, x, kernels=kernels), chain.layers[-1])
  for n in (1, 3):  # the same int8 logits (DEQUANTIZE's float rounding may vary with N)
    codes = _logit_codes(run_tflite(path, x[:n], kernels=kernels), chain.layers[-1])
    np.testing.assert_array_equal(codes, full[:n])


def test_low_bit_weights_are_stored_as_packed_int4(tmp_path):
  chain = make_chain((4, 2, 8, 3), (8, 8, 8, 8, 8))
  model = _model(export_tflite(chain, tmp_path / "m.tflite", int8_filters=False))
  tensors = _tensors_by_name(model)
  expected_layout = {  # stored layout of the HWIO / (cin, cout) codes
    "conv0": lambda c: c.transpose(3, 0, 1, 2),  # OHWI
    "dw1": lambda c: c.transpose(2, 0, 1, 3),  # [1, kh, kw, cout]
    "pw2": lambda c: c.transpose(3, 0, 1, 2),
    "fc": lambda c: c.T,  # [cout, cin]
  }
  for layer in chain.layers:
    if isinstance(layer, QGlobalAvgPool):
      continue
    tensor = tensors[f"{layer.name}.w"]
    codes = expected_layout[layer.name](weight_codes(layer.weight, layer.w_step, layer.w_bits))
    data = np.asarray(model.buffers[tensor.buffer].data, np.uint8)
    assert list(tensor.shape) == list(codes.shape)
    if layer.w_bits <= 4:
      assert tensor.type == fb.TensorType.INT4
      assert data.size == (codes.size + 1) // 2
      np.testing.assert_array_equal(unpack_int4(data, codes.size).reshape(codes.shape), codes)
    else:
      assert tensor.type == fb.TensorType.INT8
      np.testing.assert_array_equal(data.view(np.int8).reshape(codes.shape), codes)
    axis = 3 if layer.name == "dw1" else 0
    assert tensor.quantization.quantizedDimension == axis
    np.testing.assert_array_equal(tensor.quantization.scale, layer.w_step)
  versions = {(code.builtinCode, code.version) for code in model.operatorCodes}
  op = fb.BuiltinOperator
  assert {
    (op.CONV_2D, 7),
    (op.DEPTHWISE_CONV_2D, 7),
    (op.CONV_2D, 3),
    (op.FULLY_CONNECTED, 10),
  } <= versions


def test_int4_weights_take_half_the_bytes_of_int8(tmp_path):
  def weight_bytes(w_bits):
    model = _model(
      export_tflite(make_chain(w_bits, (8,) * 5), tmp_path / f"{w_bits}.tflite", int8_filters=False)
    )
    named = _tensors_by_name(model)
    return sum(
      len(model.buffers[t.buffer].data) for name, t in named.items() if name.endswith(".w")
    )

  bytes4, bytes8 = weight_bytes((4, 4, 4, 4)), weight_bytes((8, 8, 8, 8))
  assert bytes8 == 36 + 36 + 32 + 80
  assert bytes4 == bytes8 // 2  # every count is even here: no padding nibble


def test_sub_8bit_activations_are_clamped_by_minimum(tmp_path):
  chain = _chain("low")  # a_bits (8, 1, 2, 4, 2): clamps after conv0, dw1, pw2 and gap
  model = _model(export_tflite(chain, tmp_path / "m.tflite"))
  subgraph = model.subgraphs[0]
  codes = [model.operatorCodes[o.opcodeIndex].builtinCode for o in subgraph.operators]
  assert codes.count(fb.BuiltinOperator.MINIMUM) == 4
  tensors = _tensors_by_name(model)
  for name, bits in (("conv0", 1), ("dw1", 2), ("pw2", 4), ("gap", 2)):
    bound = tensors[f"{name}.qmax"]
    assert np.asarray(model.buffers[bound.buffer].data).view(np.int8)[0] == 2**bits - 1 - 128


def test_signature_and_tensor_quantization(tmp_path):
  chain = _chain("mixed_b")
  model = _model(export_tflite(chain, tmp_path / "m.tflite"))
  assert model.version == 3
  subgraph = model.subgraphs[0]
  (inp,), (out,) = subgraph.inputs, subgraph.outputs
  tensors = subgraph.tensors
  assert tensors[inp].name == b"input" and tensors[inp].type == fb.TensorType.FLOAT32
  assert list(tensors[inp].shapeSignature) == [-1, 8, 8, 1]
  assert tensors[out].name == b"logits" and list(tensors[out].shapeSignature) == [-1, NUM_CLASSES]
  op = fb.BuiltinOperator
  ops = [model.operatorCodes[o.opcodeIndex].builtinCode for o in subgraph.operators]
  assert ops == [  # a_bits (2, 4, 8, 2, 4): MINIMUM after each quantizer below 8 bits
    op.QUANTIZE,
    op.MINIMUM,
    op.CONV_2D,
    op.MINIMUM,
    op.DEPTHWISE_CONV_2D,
    op.CONV_2D,
    op.MINIMUM,
    op.MEAN,
    op.MINIMUM,
    op.FULLY_CONNECTED,
    op.DEQUANTIZE,
  ]
  relu = fb.ActivationFunctionType.RELU
  convs = [o for o in subgraph.operators if o.builtinOptionsType != fb.BuiltinOptions.NONE][:3]
  assert [o.builtinOptions.fusedActivationFunction for o in convs] == [relu] * 3
  act = _tensors_by_name(model)["dw1.out"]  # written by dw1, quantized as pw2's input
  assert act.type == fb.TensorType.INT8 and list(act.quantization.zeroPoint) == [-128]
  assert act.quantization.scale[0] == pytest.approx(chain.layers[2].in_step, rel=1e-7)
  bias = _tensors_by_name(model)["dw1.b"]
  assert bias.type == fb.TensorType.INT32
  np.testing.assert_allclose(
    bias.quantization.scale, np.float32(chain.layers[1].in_step) * chain.layers[1].w_step, rtol=1e-7
  )


def test_depthwise_filter_layout_and_multiplier(tmp_path):
  chain = _chain("depth2_linear_pw")  # dw1: 4 → 8 channels
  model = _model(export_tflite(chain, tmp_path / "m.tflite"))
  (dw,) = [
    o
    for o in model.subgraphs[0].operators
    if model.operatorCodes[o.opcodeIndex].builtinCode == fb.BuiltinOperator.DEPTHWISE_CONV_2D
  ]
  assert dw.builtinOptions.depthMultiplier == 2
  assert list(_tensors_by_name(model)["dw1.w"].shape) == [1, 3, 3, 8]


def test_metadata_records_bits_and_logit_quantization(tmp_path):
  chain = _chain("mixed_a")
  meta = read_metadata(export_tflite(chain, tmp_path / "m.tflite", int8_filters=False))
  assert meta["dataset"] == "toy"
  assert meta["qdarts.layers"] == [
    {"name": "conv0", "w_bits": 8, "a_bits": 8, "weights": "INT8"},
    {"name": "dw1", "w_bits": 4, "a_bits": 4, "weights": "INT4"},
    {"name": "pw2", "w_bits": 2, "a_bits": 2, "weights": "INT4"},
    {"name": "gap", "w_bits": None, "a_bits": 8},
    {"name": "fc", "w_bits": 8, "a_bits": 8, "weights": "INT8"},
  ]
  scale, zero_point = logit_quantization(chain.layers[-1])
  assert meta["qdarts.logits"] == {"scale": scale, "zero_point": zero_point}
  json.dumps(meta)


def test_logit_quantization_covers_every_reachable_logit():
  fc = _chain("mixed_a").layers[-1]
  scale, zero_point = logit_quantization(fc)
  rng = np.random.default_rng(0)
  corners = rng.integers(0, 2, (512, fc.weight.shape[0])) * np.float32(fc.in_step) * 255
  logits = corners @ _fake_quant_weight(fc.weight, fc.w_step, fc.w_bits) + _round_bias(fc)
  codes = np.round(logits / scale) + zero_point
  assert codes.min() >= -128 and codes.max() <= 127
  assert codes.max() - codes.min() >= 128  # the range is used, not wasted


def test_grouped_convolution_raises_naming_the_layer(tmp_path):
  rng = np.random.default_rng(0)
  chain = _chain("all8")
  grouped = _conv(rng, "g2", 4, 8, 1, 1, 2, 8, 8, 0.01, NO_PAD)
  layers = list(chain.layers)
  layers[2] = grouped
  chain = dataclasses.replace(chain, layers=tuple(layers))
  path = tmp_path / "out" / "m.tflite"
  with pytest.raises(ValueError, match=r"layer 'g2': TFLite has no convolution with groups=2"):
    export_tflite(chain, path)
  assert not any(tmp_path.rglob("*"))


def test_invalid_chain_raises_and_writes_nothing(tmp_path):
  chain = dataclasses.replace(_chain("all8"), num_classes=11)
  with pytest.raises(ValueError, match="10 outputs, but num_classes is 11"):
    export_tflite(chain, tmp_path / "m.tflite")
  assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
  def fail(src, dst):
    raise OSError("disk full")

  monkeypatch.setattr("qdarts.run_dir.os.replace", fail)
  with pytest.raises(RunFolderError, match=r"m\.tflite: cannot write \(OSError\)"):
    export_tflite(_chain("all8"), tmp_path / "m.tflite")
  assert list(tmp_path.iterdir()) == []


def test_run_tflite_rejects_bad_arguments(tmp_path):
  path = export_tflite(_chain("all8"), tmp_path / "m.tflite")
  with pytest.raises(ValueError, match="'gpu' is not one of xnnpack, builtin"):
    run_tflite(path, _inputs(1), kernels="gpu")
  with pytest.raises(ValueError, match=r"expected NHWC input"):
    run_tflite(path, _inputs(1)[0])
