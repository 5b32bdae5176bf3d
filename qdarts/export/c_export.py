"""C export of an integer chain: packed weight arrays, a layer table, and a C99 runtime.

:func:`export_c` writes into one folder

- ``model.h``: ``extern const qdarts_model <symbol>;`` and size macros (``<SYMBOL>_INPUT_BYTES``,
  ``_NUM_CLASSES``, ``_SCRATCH_BYTES``, ``_TRACE_BYTES``, ``_INPUT_H``/``_W``/``_C``);
- ``model.c``: per layer the packed weight codes (uint8), int32 bias codes, int32 fixed-point
  multipliers and shifts per output channel (a residual add: three, for its skip input, its
  input and its output), and the ``qdarts_layer`` descriptor table;
- ``qdarts_infer.h`` / ``qdarts_infer.c`` (with ``runtime=True``): the portable C99 reference
  inference from ``c_runtime/``, which runs the table on uint8 input codes and computes exactly
  the integers of :func:`~qdarts.export.integer_model.integer_trace`;
- ``manifest.json``: layers, shapes, bits, byte sizes and the SHA-256 of every file above.

Weight codes are stored output channel first (conv OHWI, linear ``(cout, cin)``), flattened in C
order and packed by container (:func:`container_bits`): ``w_bits`` 5..8 one int8 per byte;
3..4 two per byte, element ``2k`` in the low nibble (the ONNX / TFLite INT4 order,
:func:`quant.pack_int4`); 2 four per byte, element ``4k + j`` in bits ``2j..2j+1`` as a two's
complement 2-bit field (−1 → ``0b11``). A trailing partial byte is zero padded.

Each file is written atomically (temporary file, then ``os.replace``); ``manifest.json`` last,
so a folder with a manifest whose hashes match is a complete export.

``c_runtime/qdarts_run.c`` is a host driver (files in, files out) that
:func:`build_c_runner` compiles and :func:`run_c_runner` runs, to check an export bit for bit.
"""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from qdarts.export.integer_model import (
  IntAdd,
  IntConv,
  IntegerChain,
  IntGlobalAvgPool,
  IntLinear,
  to_integer_chain,
)
from qdarts.export.ir import QuantizedChain
from qdarts.run_dir import atomic_write_bytes, atomic_write_json, atomic_write_text, file_digest
from quant.integer import pack_int4, unpack_int4

FORMAT = "qdarts.c_export/1"
DEFAULT_SYMBOL = "qdarts_net"
RUNTIME_FILES = ("qdarts_infer.h", "qdarts_infer.c")
_DRIVER = "qdarts_run.c"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_RESERVED = {  # the runtime's own names and the C99 keywords a symbol must not shadow
  "qdarts_model", "qdarts_layer", "qdarts_op", "qdarts_rounding", "qdarts_infer",
  "qdarts_logits", "qdarts_multiply_by_quantized_multiplier", "main", "auto", "break", "case",
  "char", "const", "continue", "default", "do", "double", "else", "enum", "extern", "float",
  "for", "goto", "if", "inline", "int", "long", "register", "restrict", "return", "short",
  "signed", "sizeof", "static", "struct", "switch", "typedef", "union", "unsigned", "void",
  "volatile", "while",
}  # fmt: skip
_OPS = {IntConv: "QDARTS_OP_CONV", IntGlobalAvgPool: "QDARTS_OP_GLOBAL_AVG_POOL",
        IntLinear: "QDARTS_OP_LINEAR", IntAdd: "QDARTS_OP_ADD"}  # fmt: skip
_OP_NAMES = {IntConv: "conv", IntGlobalAvgPool: "global_avg_pool", IntLinear: "linear",
             IntAdd: "add"}  # fmt: skip
_ROUNDING = {"single": "QDARTS_ROUNDING_SINGLE", "double": "QDARTS_ROUNDING_DOUBLE"}


# --- weight packing ----------------------------------------------------------------------------


def container_bits(w_bits: int) -> int:
  """The storage width of ``w_bits`` codes: 2 for 2, 4 for 3..4, 8 for 5..8."""
  if not 2 <= w_bits <= 8:
    raise ValueError(f"weight bits must be in 2..8, got {w_bits}")
  return 2 if w_bits == 2 else 4 if w_bits <= 4 else 8


def pack_weight_codes(codes: np.ndarray, bits: int) -> np.ndarray:
  """Packs signed codes (flattened in C order) into ``bits``-wide fields, lowest bits first.

  Args:
    codes: integer codes that fit a signed ``bits``-bit field.
    bits: the container, 8, 4 or 2.

  Returns:
    ``(ceil(n · bits / 8),)`` uint8.
  """
  flat = np.asarray(codes).reshape(-1).astype(np.int16)
  lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
  if flat.size and (flat.min() < lo or flat.max() > hi):
    raise ValueError(f"{bits}-bit codes must lie in [{lo}, {hi}]")
  if bits == 8:
    return flat.astype(np.int8).view(np.uint8)
  if bits == 4:
    return pack_int4(flat)
  if bits != 2:
    raise ValueError(f"weight containers are 8, 4 or 2 bits, got {bits}")
  fields = np.zeros(-(-flat.size // 4) * 4, np.uint8)
  fields[: flat.size] = (flat & 0x3).astype(np.uint8)
  fields = fields.reshape(-1, 4)
  return (fields[:, 0] | fields[:, 1] << 2 | fields[:, 2] << 4 | fields[:, 3] << 6).astype(np.uint8)


def unpack_weight_codes(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
  """Inverse of :func:`pack_weight_codes`: the first ``count`` codes as int8."""
  packed = np.asarray(packed, np.uint8).reshape(-1)
  if bits == 8:
    return packed[:count].view(np.int8)
  if bits == 4:
    return unpack_int4(packed, count)
  fields = np.stack([(packed >> shift) & 0x3 for shift in (0, 2, 4, 6)], axis=1).reshape(-1)
  signed = fields.astype(np.int8)
  signed[signed > 1] -= 4
  return signed[:count]


# --- rendering model.h / model.c ----------------------------------------------------------------


def _c_string(text: str) -> str:
  """A C string literal: printable ASCII kept, everything else as octal escapes of UTF-8."""
  out = []
  for byte in text.encode():
    char = chr(byte)
    if char in '"\\?':
      out.append("\\" + char)
    elif 0x20 <= byte < 0x7F:
      out.append(char)
    else:
      out.append(f"\\{byte:03o}")
  return '"' + "".join(out) + '"'


def _c_int32(value: int) -> str:
  return "(-2147483647 - 1)" if value == -(2**31) else str(int(value))


def _c_float(value: float) -> str:
  """A float32 value as an exact C99 hexadecimal literal."""
  mantissa, exponent = float(np.float32(value)).hex().split("p")
  return f"{mantissa.rstrip('0').rstrip('.')}p{exponent}f"


def _c_array(c_type: str, name: str, values: list[str], per_line: int) -> str:
  rows = [", ".join(values[i : i + per_line]) for i in range(0, len(values), per_line)]
  body = ",\n".join(f"  {row}" for row in rows)
  return f"static const {c_type} {name}[{len(values)}] = {{\n{body}\n}};\n"


@dataclasses.dataclass(frozen=True)
class _LayerArrays:
  """One layer's arrays as they go into ``model.c``; ``None`` where the layer has none."""

  weights: np.ndarray | None  # packed uint8
  bias: np.ndarray | None
  multiplier: np.ndarray | None
  shift: np.ndarray | None


def _arrays(layer) -> _LayerArrays:
  weights = bias = multiplier = shift = None
  if isinstance(layer, IntAdd):  # (skip, input, output) fixed-point pairs
    multiplier = np.array(
      [layer.skip_multiplier, layer.in_multiplier, layer.requant.multiplier[0]], np.int32
    )
    shift = np.array([layer.skip_shift, layer.in_shift, layer.requant.shift[0]], np.int32)
    return _LayerArrays(None, None, multiplier, shift)
  if not isinstance(layer, IntGlobalAvgPool):
    weights = pack_weight_codes(layer.weight, container_bits(layer.w_bits))
    bias = layer.bias
  if not isinstance(layer, IntLinear):
    multiplier, shift = layer.requant.multiplier, layer.requant.shift
  return _LayerArrays(weights, bias, multiplier, shift)


def _shapes(layer) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
  if isinstance(layer, IntConv):
    return layer.in_shape, layer.out_shape
  if isinstance(layer, IntGlobalAvgPool):
    return layer.in_shape, (1, 1, layer.in_shape[2])
  if isinstance(layer, IntAdd):
    return layer.shape, layer.shape
  cout, cin = layer.weight.shape
  return (1, 1, cin), (1, 1, cout)


def _descriptor(index: int, layer, arrays: _LayerArrays, save_input: bool) -> str:
  (ih, iw, ic), (oh, ow, oc) = _shapes(layer)
  fields = {
    "name": _c_string(layer.name),
    "op": _OPS[type(layer)],
    "in_h": ih, "in_w": iw, "in_c": ic, "out_h": oh, "out_w": ow, "out_c": oc,
    "kernel_h": 0, "kernel_w": 0, "stride": 1, "pad_top": 0, "pad_left": 0, "groups": 1,
    "w_bits": 0, "w_container_bits": 0,
    "in_max": 2**layer.in_bits - 1,
    "out_min": 0, "out_max": 0, "out_zero_point": 0, "in_zero_point": 0, "skip_layer": 0,
    "save_input": int(save_input),
    "weights": "NULL", "bias": "NULL", "multiplier": "NULL", "shift": "NULL",
  }  # fmt: skip
  if isinstance(layer, IntConv):
    fields.update(
      kernel_h=layer.weight.shape[1],
      kernel_w=layer.weight.shape[2],
      stride=layer.stride,
      pad_top=layer.padding[0][0],
      pad_left=layer.padding[1][0],
      groups=layer.groups,
    )
  if isinstance(layer, IntConv | IntLinear):
    fields.update(w_bits=layer.w_bits, w_container_bits=container_bits(layer.w_bits))
  if isinstance(layer, IntAdd):
    fields.update(in_zero_point=layer.in_zero_point, skip_layer=layer.skip)
  if not isinstance(layer, IntLinear):
    fields.update(
      out_min=layer.requant.out_min,
      out_max=layer.requant.out_max,
      out_zero_point=layer.requant.zero_point,
    )
  for field in dataclasses.fields(arrays):
    if getattr(arrays, field.name) is not None:
      fields[field.name] = f"l{index}_{field.name}"
  body = ",\n".join(f"    .{key} = {value}" for key, value in fields.items())
  return f"  {{\n{body}\n  }}"


def _buffer_sizes(ichain: IntegerChain) -> dict[str, int]:
  """Activation buffer sizes in bytes: the input, one scratch buffer, the scratch (two
  buffers, three when a residual add keeps a layer's input), the trace."""
  outputs = [int(np.prod(_shapes(layer)[1])) for layer in ichain.layers[:-1]]
  saved = [int(np.prod(_shapes(ichain.layers[i])[0])) for i in _saved_inputs(ichain)]
  buffer = max(outputs + saved)
  return {
    "input_bytes": int(np.prod(ichain.input_shape)),
    "buffer_bytes": buffer,
    "scratch_bytes": (3 if saved else 2) * buffer,
    "trace_bytes": sum(outputs),
  }


def _saved_inputs(ichain: IntegerChain) -> set[int]:
  """Indices of the layers whose input a later residual add reads."""
  return {layer.skip for layer in ichain.layers if isinstance(layer, IntAdd)}


def model_header(
  generator: str,
  runtime_header: str,
  model_type: str,
  symbol: str,
  input_shape: tuple[int, int, int],
  num_classes: int,
  sizes: dict[str, int],
) -> str:
  """``model.h`` of a C export: the input shape, buffer sizes (``input_bytes``,
  ``scratch_bytes``, ``trace_bytes``) and the ``extern`` model ``symbol`` of ``model_type``
  declared in ``runtime_header``."""
  prefix, (h, w, c) = symbol.upper(), input_shape
  return f"""/* Generated by {generator}; do not edit. */
#ifndef {prefix}_MODEL_H_
#define {prefix}_MODEL_H_

#include "{runtime_header}"

#define {prefix}_INPUT_H {h}
#define {prefix}_INPUT_W {w}
#define {prefix}_INPUT_C {c}
#define {prefix}_INPUT_BYTES {sizes["input_bytes"]}
#define {prefix}_NUM_CLASSES {num_classes}
#define {prefix}_SCRATCH_BYTES {sizes["scratch_bytes"]}
#define {prefix}_TRACE_BYTES {sizes["trace_bytes"]}

extern const {model_type} {symbol};

#endif /* {prefix}_MODEL_H_ */
"""


def render_c(ichain: IntegerChain, symbol: str = DEFAULT_SYMBOL) -> tuple[str, str]:
  """The text of ``model.h`` and ``model.c`` for an integer chain.

  Args:
    ichain: the integer chain.
    symbol: the C name of the ``const qdarts_model`` (a C identifier); macros are prefixed with
      its upper case.

  Returns:
    ``(header, source)``.

  Raises:
    ValueError: ``symbol`` is not a C identifier or is one of the runtime's names.
  """
  if not _IDENTIFIER.match(symbol) or symbol in _RESERVED:
    raise ValueError(
      f"symbol {symbol!r} must be a C identifier other than the runtime's names "
      f"(e.g. {DEFAULT_SYMBOL!r})"
    )
  sizes = _buffer_sizes(ichain)
  header = model_header(
    f"qdarts.export.c_export ({FORMAT})", "qdarts_infer.h", "qdarts_model", symbol,
    ichain.input_shape, ichain.num_classes, sizes,
  )  # fmt: skip
  parts = [
    f"/* Generated by qdarts.export.c_export ({FORMAT}); do not edit.\n"
    f" * {len(ichain.layers)} layers, {ichain.rounding} rounding. */\n"
    '#include "model.h"\n\n#include <stddef.h>\n'
  ]
  descriptors = []
  for index, layer in enumerate(ichain.layers):
    arrays = _arrays(layer)
    if arrays.weights is not None:
      hex_bytes = [f"0x{b:02x}" for b in arrays.weights.tolist()]
      parts.append(_c_array("uint8_t", f"l{index}_weights", hex_bytes, 12))
    for key in ("bias", "multiplier", "shift"):
      values = getattr(arrays, key)
      if values is not None:
        ints = [_c_int32(v) for v in values.tolist()]
        parts.append(_c_array("int32_t", f"l{index}_{key}", ints, 6))
    descriptors.append(_descriptor(index, layer, arrays, index in _saved_inputs(ichain)))
  scales = [_c_float(v) for v in ichain.layers[-1].logit_scale.tolist()]
  parts.append(_c_array("float", "logit_scale", scales, 4))
  parts.append(
    f"static const qdarts_layer layers[{len(descriptors)}] = {{\n"
    + ",\n".join(descriptors)
    + "\n};\n"
  )
  parts.append(
    f"const qdarts_model {symbol} = {{\n"
    f"  .num_layers = {len(ichain.layers)},\n"
    "  .layers = layers,\n"
    f"  .rounding = {_ROUNDING[ichain.rounding]},\n"
    f"  .num_classes = {ichain.num_classes},\n"
    f"  .input_bytes = {sizes['input_bytes']},\n"
    f"  .buffer_bytes = {sizes['buffer_bytes']},\n"
    f"  .scratch_bytes = {sizes['scratch_bytes']},\n"
    f"  .trace_bytes = {sizes['trace_bytes']},\n"
    f"  .input_scale = {_c_float(ichain.layers[0].in_scale)},\n"
    "  .logit_scale = logit_scale\n};\n"
  )
  return header, "\n".join(parts)


# --- the manifest and the export -----------------------------------------------------------------


def _layer_record(layer) -> dict:
  in_shape, out_shape = _shapes(layer)
  arrays = _arrays(layer)
  record = {
    "name": layer.name,
    "op": _OP_NAMES[type(layer)],
    "in_shape": list(in_shape),
    "out_shape": list(out_shape),
    "in_bits": layer.in_bits,
    "in_scale": layer.in_scale,
    "in_zero_point": getattr(layer, "in_zero_point", 0),
  }
  if isinstance(layer, IntAdd):
    record.update(skip=layer.skip, skip_scale=layer.skip_scale, left_shift=layer.left_shift)
  if isinstance(layer, IntConv):
    record.update(
      kernel=list(layer.weight.shape[1:3]),
      stride=layer.stride,
      padding=[list(side) for side in layer.padding],
      groups=layer.groups,
    )
  if isinstance(layer, IntConv | IntLinear):
    record.update(w_bits=layer.w_bits, w_container_bits=container_bits(layer.w_bits))
  if not isinstance(layer, IntLinear):
    record["out_bits"] = int(layer.requant.out_max).bit_length()
    record["out_zero_point"] = int(layer.requant.zero_point)
  record.update(
    weight_bytes=0 if arrays.weights is None else int(arrays.weights.nbytes),
    bias_bytes=0 if arrays.bias is None else int(arrays.bias.nbytes),
    requant_bytes=0 if arrays.multiplier is None else 8 * int(arrays.multiplier.size),
  )
  return record


def _manifest(ichain: IntegerChain, symbol: str, files: list[dict]) -> dict:
  """The ``manifest.json`` document; ``files`` are :func:`qdarts.run_dir.file_digest` records."""
  layers = [_layer_record(layer) for layer in ichain.layers]
  sizes = {key: sum(r[key] for r in layers) for key in ("weight_bytes", "bias_bytes")}
  sizes["requant_bytes"] = sum(r["requant_bytes"] for r in layers)
  sizes["logit_scale_bytes"] = 4 * ichain.num_classes
  sizes["parameter_bytes"] = sum(sizes.values())
  first = ichain.layers[0]
  return {
    "format": FORMAT,
    "symbol": symbol,
    "rounding": ichain.rounding,
    "input": {
      "shape": list(ichain.input_shape),
      "layout": "NHWC",
      "dtype": "uint8",
      "bits": first.in_bits,
      "scale": first.in_scale,
      "zero_point": 0,
    },
    "output": {
      "num_classes": ichain.num_classes,
      "dtype": "int32",
      "logits": "accumulator * logit_scale[c]",
      "logit_scale": [float(v) for v in ichain.layers[-1].logit_scale],
    },
    "weight_packing": "output channels first, C order; 8: int8; 4: two per byte, low nibble "
    "first; 2: four per byte, element 4k+j in bits 2j..2j+1; zero-padded last byte",
    "sizes": {**sizes, **_buffer_sizes(ichain)},
    "layers": layers,
    "metadata": dict(ichain.metadata),
    "files": files,
  }


def export_c(
  chain: QuantizedChain | IntegerChain,
  out_dir: str | os.PathLike,
  *,
  symbol: str = DEFAULT_SYMBOL,
  rounding: str = "single",
  runtime: bool = True,
) -> list[Path]:
  """Writes ``model.h``, ``model.c``, the C runtime and ``manifest.json`` into ``out_dir``.

  Args:
    chain: a quantized chain (converted with :func:`to_integer_chain` and ``rounding``) or an
      integer chain (its own rounding is used).
    out_dir: the destination folder, created if missing; files there are replaced.
    symbol: the C name of the model object (see :func:`render_c`).
    rounding: ``"single"`` or ``"double"`` requantization, for a ``QuantizedChain``.
    runtime: also copy ``qdarts_infer.h`` / ``qdarts_infer.c`` so the folder builds alone.

  Returns:
    The paths written, ``manifest.json`` last.

  Raises:
    ValueError: the chain cannot be exported (the message names the layer) or a bad ``symbol``.

  Example::

    export_c(chain, "out/c")  # then: cc -std=c99 -c out/c/model.c out/c/qdarts_infer.c
  """
  ichain = chain if isinstance(chain, IntegerChain) else to_integer_chain(chain, rounding=rounding)
  header, source = render_c(ichain, symbol)
  runtime_files = RUNTIME_FILES if runtime else ()
  return write_c_folder(
    out_dir, header, source, runtime_files, lambda files: _manifest(ichain, symbol, files)
  )


def write_c_folder(
  out_dir: str | os.PathLike,
  header: str,
  source: str,
  runtime_files: tuple[str, ...],
  manifest_of: Callable[[list[dict]], dict],
) -> list[Path]:
  """Writes ``model.h``, ``model.c``, copies of ``runtime_files`` from :func:`c_runtime_dir` and
  ``manifest_of(digests of those files)`` as ``manifest.json`` (last), each atomically; returns
  the paths written."""
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  written = [atomic_write_text(out / "model.h", header), atomic_write_text(out / "model.c", source)]
  for name in runtime_files:
    written.append(atomic_write_bytes(out / name, (c_runtime_dir() / name).read_bytes()))
  written.append(
    atomic_write_json(out / "manifest.json", manifest_of([file_digest(p) for p in written]))
  )
  return written


# --- building and running the host driver ----------------------------------------------------


def c_runtime_dir() -> Path:
  """The folder of the C runtime sources shipped with the package."""
  return Path(__file__).with_name("c_runtime")


def find_c_compiler() -> str | None:
  """``$CC`` if set, else the first of ``cc``, ``gcc``, ``clang`` on ``PATH``; ``None`` if none."""
  candidates = [os.environ["CC"]] if os.environ.get("CC") else ["cc", "gcc", "clang"]
  for name in candidates:
    found = shutil.which(name)
    if found:
      return found
  return None


def build_c_runner(
  export_dir: str | os.PathLike,
  executable: str | os.PathLike | None = None,
  *,
  compiler: str | None = None,
  flags: tuple[str, ...] = ("-std=c99", "-O2"),
) -> Path:
  """Compiles ``model.c``, the runtime and the ``qdarts_run`` driver of an export.

  Args:
    export_dir: a folder written by :func:`export_c`.
    executable: the output path (default ``export_dir/qdarts_run``).
    compiler: the C compiler (default :func:`find_c_compiler`).
    flags: compiler flags.

  Returns:
    The executable's path.

  Raises:
    RuntimeError: no C compiler, or compilation failed (with the compiler's message).
  """
  export_dir = Path(export_dir)
  runtime = export_dir if (export_dir / RUNTIME_FILES[1]).exists() else c_runtime_dir()
  sources = [export_dir / "model.c", runtime / RUNTIME_FILES[1]]
  return compile_driver(export_dir, sources, [f"-I{runtime}"], executable, compiler, flags)


def compile_driver(
  export_dir: Path,
  sources: list[Path],
  options: list[str],
  executable: str | os.PathLike | None,
  compiler: str | None,
  flags: tuple[str, ...],
) -> Path:
  """Compiles ``sources`` with the ``qdarts_run`` driver for the model named in the folder's
  ``manifest.json`` (``-DQDARTS_RUN_MODEL``), ``-I export_dir`` and ``options``.

  Raises:
    RuntimeError: no C compiler, or compilation failed (with the compiler's message).
  """
  compiler = compiler or find_c_compiler()
  if compiler is None:
    raise RuntimeError("no C compiler found: install cc/gcc/clang or set CC")
  symbol = json.loads((export_dir / "manifest.json").read_text())["symbol"]
  executable = Path(executable) if executable is not None else export_dir / "qdarts_run"
  command = [
    compiler, *flags, *options, f"-DQDARTS_RUN_MODEL={symbol}", f"-I{export_dir}",
    *(str(path) for path in sources), str(c_runtime_dir() / _DRIVER), "-o", str(executable),
  ]  # fmt: skip
  result = subprocess.run(command, capture_output=True, text=True)
  if result.returncode != 0:
    raise RuntimeError(f"C compilation failed: {' '.join(command)}\n{result.stderr}")
  return executable


@dataclasses.dataclass(frozen=True)
class CRunResult:
  """Outputs of the C driver for a batch.

  Attributes:
    accumulators: int32 ``(N, num_classes)`` of the final linear.
    logits: float32 ``(N, num_classes)``, ``accumulators · logit_scale``.
    trace: uint8 ``(N, trace_bytes)``: every non-final layer's output codes, concatenated.
    seconds: float64 ``(N,)`` time of each ``qdarts_infer`` call, measured in C (with
      ``timed=True``; else empty).
  """

  accumulators: np.ndarray
  logits: np.ndarray
  trace: np.ndarray
  seconds: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))


def run_c_runner(
  executable: str | os.PathLike, codes: np.ndarray, *, timed: bool = False
) -> CRunResult:
  """Runs a driver from :func:`build_c_runner` on a batch of uint8 input codes.

  Args:
    executable: the compiled driver.
    codes: uint8 ``(N, H, W, C)`` input codes (from
      :func:`~qdarts.export.integer_model.quantize_input`).
    timed: also return each sample's inference time, measured by the driver.

  Returns:
    The :class:`CRunResult`.

  Raises:
    RuntimeError: the driver failed (with its message).
  """
  codes = np.ascontiguousarray(codes, np.uint8)
  n = codes.shape[0]
  with tempfile.TemporaryDirectory(prefix="qdarts_c_") as tmp:
    tmp = Path(tmp)
    (tmp / "input.u8").write_bytes(codes.tobytes())
    paths = [tmp / "input.u8", tmp / "output.bin", tmp / "trace.u8"]
    paths += [tmp / "times.f64"] if timed else []
    result = subprocess.run([str(executable), *map(str, paths)], capture_output=True, text=True)
    if result.returncode != 0:
      raise RuntimeError(f"{executable} failed ({result.returncode}): {result.stderr.strip()}")
    output = np.frombuffer((tmp / "output.bin").read_bytes(), np.uint8).reshape(n, 2, -1)
    trace = np.frombuffer((tmp / "trace.u8").read_bytes(), np.uint8).reshape(n, -1)
    seconds = np.frombuffer((tmp / "times.f64").read_bytes(), "<f8") if timed else np.zeros(0)
  accumulators = output[:, 0].copy().view("<i4").astype(np.int32)
  logits = output[:, 1].copy().view("<f4").astype(np.float32)
  return CRunResult(accumulators, logits, trace.copy(), seconds.astype(np.float64))
