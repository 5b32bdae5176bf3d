"""C export: packing, manifest, and the C99 runtime bit-exact against the numpy integer model."""

import hashlib
import json
import re
import subprocess

import numpy as np
import pytest

from qdarts.export import QConv, QGlobalAvgPool, QLinear, QuantizedChain, export_c
from qdarts.export.c_export import (
  build_c_runner,
  c_runtime_dir,
  container_bits,
  find_c_compiler,
  pack_weight_codes,
  run_c_runner,
  unpack_weight_codes,
)
from qdarts.export.integer_model import (
  integer_forward,
  integer_trace,
  multiply_by_quantized_multiplier,
  quantize_input,
  quantize_multiplier,
  to_integer_chain,
)

INPUT_SHAPE = (8, 8, 3)
NUM_CLASSES = 5
STRICT = ("-std=c99", "-O1", "-Wall", "-Wextra", "-pedantic", "-Werror")

needs_cc = pytest.mark.skipif(
  find_c_compiler() is None, reason="no C compiler (cc/gcc/clang or $CC) to build the runtime"
)


def make_chain(w_bits, a_bits, seed=0):
  """8x8x3 → conv3x3(6) stride 2 → depthwise 3x3 → conv1x1(8) → GAP → linear(5)."""
  rng = np.random.default_rng(seed)

  def quantized(name, shape, bits):
    weight = rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[:-1])), shape).astype(np.float32)
    step = np.abs(weight).reshape(-1, shape[-1]).max(0) / (2 ** (bits - 1) - 1)
    bias = rng.normal(0.0, 0.1, shape[-1]).astype(np.float32)
    return {"name": name, "weight": weight, "bias": bias, "w_step": step.astype(np.float32)}

  def step(bits, top):
    return float(top * rng.uniform(0.9, 1.1) / (2**bits - 1))

  convs = [  # (name, kernel shape, stride, groups, padding, activation range)
    ("conv0", (3, 3, 3, 6), 2, 1, ((1, 1), (1, 1)), 1.0),
    ("dw1", (3, 3, 1, 6), 1, 6, ((1, 1), (1, 1)), 0.6),
    ("pw2", (1, 1, 6, 8), 1, 1, ((0, 0), (0, 0)), 0.8),
  ]
  layers = [
    QConv(**quantized(name, shape, w_bits[i]), w_bits=w_bits[i], in_step=step(a_bits[i], top),
          a_bits=a_bits[i], stride=stride, padding=pad, groups=groups)
    for i, (name, shape, stride, groups, pad, top) in enumerate(convs)
  ]  # fmt: skip
  layers.append(QGlobalAvgPool("gap", in_step=step(a_bits[3], 1.0), a_bits=a_bits[3]))
  fc = quantized("fc", (8, NUM_CLASSES), w_bits[3])
  layers.append(QLinear(**fc, w_bits=w_bits[3], in_step=step(a_bits[4], 0.5), a_bits=a_bits[4]))
  return QuantizedChain(tuple(layers), INPUT_SHAPE, NUM_CLASSES, {"dataset": "toy"})


def _inputs(n=32, seed=1):
  return np.random.default_rng(seed).uniform(0.0, 1.0, (n, *INPUT_SHAPE)).astype(np.float32)


def test_container_bits():
  assert [container_bits(b) for b in range(2, 9)] == [2, 4, 4, 8, 8, 8, 8]
  with pytest.raises(ValueError, match="2..8"):
    container_bits(1)


def test_weight_packing_layout_and_round_trip():
  # 2 bits: element 4k + j in bits 2j..2j+1, two's complement: -1 → 0b11.
  assert pack_weight_codes(np.array([-1, 0, 1, -1, 1]), 2).tolist() == [0b11_01_00_11, 0b01]
  assert pack_weight_codes(np.array([-1, 2, 7]), 4).tolist() == [0x2F, 0x07]  # low nibble first
  assert pack_weight_codes(np.array([-127, 5]), 8).tolist() == [0x81, 0x05]
  rng = np.random.default_rng(0)
  for bits, top in ((2, 1), (4, 7), (8, 127)):
    codes = rng.integers(-top, top + 1, 37).astype(np.int8)
    packed = pack_weight_codes(codes, bits)
    assert packed.dtype == np.uint8 and packed.size == -(-37 * bits // 8)
    np.testing.assert_array_equal(unpack_weight_codes(packed, bits, 37), codes)
  with pytest.raises(ValueError, match=r"\[-2, 1\]"):
    pack_weight_codes(np.array([2]), 2)


_MBQM_DRIVER = r"""
#include <stdio.h>
#include "qdarts_infer.h"
int main(void) {
  long x, m, shift, rounding;
  while (scanf("%ld %ld %ld %ld", &x, &m, &shift, &rounding) == 4)
    printf("%ld\n", (long)qdarts_multiply_by_quantized_multiplier(
        (int32_t)x, (int32_t)m, (int32_t)shift, (int32_t)rounding));
  return 0;
}
"""


@needs_cc
def test_c_fixed_point_matches_numpy_on_edge_cases(tmp_path):
  rng = np.random.default_rng(0)
  n = 3000
  x = rng.integers(-(2**31), 2**31, n)
  x[:1000] = rng.integers(-300, 300, 1000)
  x[1000:1010] = [-(2**31), 2**31 - 1, -1, 0, 1, 2**30, -(2**30), 7, -7, 3]
  reals = np.exp(rng.uniform(np.log(1e-10), np.log(1e6), n))  # shifts -31..20: left shifts too
  m, shift = np.array([quantize_multiplier(float(r)) for r in reals]).T
  source = tmp_path / "mbqm.c"
  source.write_text(_MBQM_DRIVER)
  exe = tmp_path / "mbqm"
  runtime = c_runtime_dir()
  subprocess.run(
    [find_c_compiler(), *STRICT, f"-I{runtime}", str(source), str(runtime / "qdarts_infer.c"),
     "-o", str(exe)],
    check=True,
  )  # fmt: skip
  for code, rounding in ((1, "single"), (2, "double")):
    lines = "".join(f"{a} {b} {c} {code}\n" for a, b, c in zip(x, m, shift, strict=True))
    out = subprocess.run([str(exe)], input=lines, capture_output=True, text=True, check=True)
    expected = multiply_by_quantized_multiplier(x, m, shift, rounding)
    assert [int(v) for v in out.stdout.split()] == expected.tolist()


@needs_cc
@pytest.mark.parametrize(
  ("w_bits", "a_bits", "rounding"),
  [
    ((8, 4, 2, 8), (8, 4, 2, 8, 8), "single"),
    ((8, 4, 2, 8), (8, 4, 2, 8, 8), "double"),
    ((3, 5, 2, 6), (8, 1, 3, 5, 6), "single"),
    ((2, 2, 2, 2), (2, 2, 2, 2, 2), "double"),
  ],
)
def test_c_runtime_is_bit_exact(tmp_path, w_bits, a_bits, rounding):
  ichain = to_integer_chain(make_chain(w_bits, a_bits), rounding=rounding)
  export_c(ichain, tmp_path, symbol="kws_net")
  assert "#define KWS_NET_INPUT_BYTES 192" in (tmp_path / "model.h").read_text()
  executable = build_c_runner(tmp_path, flags=STRICT)
  codes = quantize_input(ichain, _inputs())
  result = run_c_runner(executable, codes)

  trace = integer_trace(ichain, codes)
  np.testing.assert_array_equal(result.accumulators, trace.accumulators)
  # Every intermediate code of every layer, in layer order.
  expected = np.concatenate([c.reshape(len(codes), -1) for c in trace.codes[1:]], axis=1)
  assert result.trace.shape == expected.shape
  np.testing.assert_array_equal(result.trace, expected)
  np.testing.assert_array_equal(result.logits, integer_forward(ichain, codes))


@needs_cc
def test_c_runtime_rejects_codes_above_the_input_range(tmp_path):
  chain = make_chain((8, 8, 8, 8), (4, 8, 8, 8, 8))  # 4-bit input: codes 0..15
  export_c(chain, tmp_path)
  executable = build_c_runner(tmp_path, flags=STRICT)
  codes = np.full((1, *INPUT_SHAPE), 16, np.uint8)
  with pytest.raises(RuntimeError, match="status 2"):
    run_c_runner(executable, codes)


def _weight_bytes(out_dir):
  manifest = json.loads((out_dir / "manifest.json").read_text())
  declared = re.findall(r"l\d+_weights\[(\d+)\]", (out_dir / "model.c").read_text())
  assert manifest["sizes"]["weight_bytes"] == sum(int(n) for n in declared)
  return manifest["sizes"]["weight_bytes"]


def test_low_bit_weights_are_packed(tmp_path):
  sizes = {}
  for bits in (8, 4, 2):
    sizes[bits] = _weight_bytes(
      export_c(make_chain((bits,) * 4, (8,) * 5), tmp_path / f"w{bits}")[0].parent
    )
  # 162 + 54 + 48 + 40 int8 weights; each layer pads at most one byte.
  assert sizes[8] == 304
  assert sizes[8] / 2 <= sizes[4] <= sizes[8] / 2 + 4
  assert sizes[8] / 4 <= sizes[2] <= sizes[8] / 4 + 4


def test_manifest_describes_the_files_and_layers(tmp_path):
  chain = make_chain((8, 4, 2, 8), (8, 4, 2, 8, 8))
  written = export_c(chain, tmp_path)
  names = [p.name for p in written]
  assert names == ["model.h", "model.c", "qdarts_infer.h", "qdarts_infer.c", "manifest.json"]
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temporary files
  manifest = json.loads((tmp_path / "manifest.json").read_text())
  for record in manifest["files"]:
    data = (tmp_path / record["path"]).read_bytes()
    assert record["bytes"] == len(data)
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
  layers = manifest["layers"]
  assert [r["name"] for r in layers] == ["conv0", "dw1", "pw2", "gap", "fc"]
  assert [r.get("w_container_bits") for r in layers] == [8, 4, 2, None, 8]
  assert layers[0]["out_shape"] == [4, 4, 6] and layers[1]["groups"] == 6
  assert [r.get("out_bits") for r in layers] == [4, 2, 8, 8, None]
  assert layers[1]["weight_bytes"] == 27  # 54 int4 codes
  assert manifest["input"]["bits"] == 8 and manifest["rounding"] == "single"
  assert manifest["sizes"]["trace_bytes"] == 96 + 96 + 128 + 8
  assert manifest["metadata"] == {"dataset": "toy"}


def test_bad_symbol_writes_nothing(tmp_path):
  for symbol in ("2net", "qdarts_model", "int", "my-net"):
    with pytest.raises(ValueError, match="C identifier"):
      export_c(make_chain((8,) * 4, (8,) * 5), tmp_path / "out", symbol=symbol)
  assert not (tmp_path / "out").exists()
