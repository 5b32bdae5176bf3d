"""Every deployable format of a run's SubNet, each checked against the integer reference.

``qdarts export RUN --format onnx|tflite|c|all`` and the last stage of ``qdarts search`` call
:func:`export_and_verify`: it writes each format into the run folder (atomically) and runs the
written artifact on a batch of test inputs in its own runtime — ONNX Runtime, LiteRT, the C
reference compiled with the system compiler — and compares it with
:func:`~qdarts.export.integer_model.integer_forward`, the project's integer ground truth:
equal predictions, and the largest logit difference in units of the output's integer step.
"""

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from qdarts.errors import ConfigError
from qdarts.export.c_export import (
  build_c_runner,
  export_c,
  find_c_compiler,
  render_c,
  run_c_runner,
)
from qdarts.export.from_chain import graph_from_chain
from qdarts.export.graph_c import build_graph_c_runner, export_graph_c, render_graph_c
from qdarts.export.graph_integer import (
  IntegerGraph,
  as_litert,
  as_ort,
  integer_graph_forward,
  integer_graph_trace,
  quantize_graph_input,
  to_integer_graph,
)
from qdarts.export.graph_ir import QuantizedGraph
from qdarts.export.graph_onnx import build_graph_model, export_graph_onnx, run_graph_onnx_codes
from qdarts.export.integer_model import (
  IntegerChain,
  integer_forward,
  integer_trace,
  quantize_input,
  to_integer_chain,
)
from qdarts.export.ir import QuantizedChain
from qdarts.export.onnx import OUTPUT_NAME, export_onnx
from qdarts.export.onnx import build_model as build_onnx

FORMATS = ("onnx", "tflite", "c")
ARTIFACT = {"onnx": "model.onnx", "tflite": "model.tflite", "c": "c"}


def _verify_onnx(path: Path, ichain: IntegerChain, x: np.ndarray, chain) -> dict:
  """As a DAG's (:func:`_verify_graph_onnx`): the chain's ONNX model is its graph's."""
  return _verify_graph_onnx(path, to_integer_graph(graph_from_chain(chain)), x)


def _logit_grid(logits: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
  """Float logits as the TFLite model's int8 logit codes (float64)."""
  return np.clip(np.round(np.asarray(logits, np.float64) / scale) + zero_point, -128, 127)


def _xnnpack_record(path: Path, x: np.ndarray, single: np.ndarray, scale, zero_point) -> dict:
  """LiteRT's default runtime (XNNPACK where it applies) against the integer model in single
  rounding (``single``: its float logits, what ONNX Runtime and the fake-quant network compute),
  both on the model's int8 logit grid. XNNPACK requantizes in float32, once; an op it does not
  take (an INT4 filter, MINIMUM) runs on the builtin kernels, so this is a measurement, not an
  identity: an argmax tie on the int8 grid or a near-tie rounding can still differ."""
  from qdarts.export.tflite import run_tflite  # noqa: PLC0415 (optional)

  codes = _logit_grid(run_tflite(path, x, kernels="xnnpack"), scale, zero_point)
  reference = _logit_grid(single, scale, zero_point)
  return {
    "xnnpack_prediction_agreement": float((codes.argmax(-1) == reference.argmax(-1)).mean()),
    "xnnpack_max_logit_diff_lsb": float(np.abs(codes - reference).max()),
    "xnnpack_reference": "integer model, single rounding (as ONNX Runtime and fake-quant)",
  }


def _filters(path: Path) -> str:
  """``"int8"`` or ``"int4"``: whether the model stores any INT4 filter (its metadata)."""
  from qdarts.export.tflite import read_metadata  # noqa: PLC0415 (optional)

  layers = read_metadata(path).get("qdarts.layers", [])
  return "int4" if any(layer.get("weights") == "INT4" for layer in layers) else "int8"


def _verify_tflite(path: Path, ichain: IntegerChain, x: np.ndarray, chain) -> dict:
  """LiteRT's builtin kernels against the integer model with their rounding (gemmlowp's double
  rounding). The TFLite model's logits are int8 codes, so the reference logits are put on the
  same grid first: gaps are in those codes, and predictions compare the two code vectors. Then
  LiteRT's default runtime, XNNPACK (:func:`_xnnpack_record`)."""
  from qdarts.export.tflite import logit_quantization, run_tflite  # noqa: PLC0415 (optional)

  double = dataclasses.replace(ichain, rounding="double")
  scale, zero_point = logit_quantization(chain.layers[-1])
  codes = _logit_grid(run_tflite(path, x, kernels="builtin"), scale, zero_point)
  reference = _logit_grid(integer_forward(double, x), scale, zero_point)
  single = integer_forward(dataclasses.replace(ichain, rounding="single"), x)
  return {
    "verified": True,
    "samples": int(len(x)),
    "prediction_agreement": float((codes.argmax(-1) == reference.argmax(-1)).mean()),
    "max_logit_diff_lsb": float(np.abs(codes - reference).max()),
    "kernels": "builtin (double rounding)",
    "filters": _filters(path),
    **_xnnpack_record(path, x, single, scale, zero_point),
  }


def _verify_c(path: Path, ichain: IntegerChain, x: np.ndarray, chain) -> dict:
  if find_c_compiler() is None:
    return {"verified": False, "why": "no C compiler on this machine"}
  codes = quantize_input(ichain, x)
  with tempfile.TemporaryDirectory(prefix="qdarts_c_") as tmp:
    out = run_c_runner(build_c_runner(path, Path(tmp) / "runner"), codes)
  expected = integer_trace(ichain, x).accumulators
  record = _compare(out.logits, integer_forward(ichain, x), ichain)
  record["bit_exact"] = bool(np.array_equal(out.accumulators, expected))
  return record


def _compare(logits: np.ndarray, reference: np.ndarray, ichain: IntegerChain) -> dict:
  """Prediction agreement, and the largest logit gap in the integer model's output steps (int32
  accumulator LSBs; a format with a coarser output rescales it)."""
  step = np.asarray(ichain.layers[-1].logit_scale, np.float64)
  gap = np.abs(np.asarray(logits, np.float64) - reference) / step
  return {
    "verified": True,
    "samples": int(len(logits)),
    "prediction_agreement": float((logits.argmax(-1) == reference.argmax(-1)).mean()),
    "max_logit_diff_lsb": float(gap.max()),
  }


_WRITERS: dict[str, Callable[[QuantizedChain, Path, str], object]] = {  # (chain, path, filters)
  "onnx": lambda chain, path, filters: export_onnx(chain, path),
  "c": lambda chain, path, filters: export_c(chain, path),
}
_VERIFIERS = {"onnx": _verify_onnx, "tflite": _verify_tflite, "c": _verify_c}


def _tflite_module():
  try:
    from qdarts.export import tflite  # noqa: PLC0415
  except ImportError as e:
    raise ConfigError(
      f"--format tflite needs LiteRT: pip install 'qdarts[tflite]' ({e.name} is missing)"
    ) from None
  return tflite


def _write_tflite(chain: QuantizedChain, path: Path, filters: str):
  return _tflite_module().export_tflite(chain, path, int8_filters=filters == "int8")


_WRITERS["tflite"] = _write_tflite
_BUILDERS: dict[str, Callable[[QuantizedChain, str], object]] = {  # (chain, filters)
  "onnx": lambda chain, filters: build_onnx(chain),
  "tflite": lambda chain, filters: _tflite_module().build_model(
    chain, int8_filters=filters == "int8"
  ),
  "c": lambda chain, filters: render_c(to_integer_chain(chain)),
}
TFLITE_FILTERS = ("int8", "int4")
"""``export.tflite_filters`` / ``qdarts export --tflite-filters``: INT8 filters everywhere (the
default: XNNPACK, LiteRT's default runtime, delegates no INT4 filter), or INT4 for
``w_bits <= 4`` (half those layers' bytes; they run on the builtin kernels)."""


def check_tflite_filters(filters: str) -> str:
  """``filters`` if it is one of :data:`TFLITE_FILTERS`, else a one-line ConfigError."""
  if filters not in TFLITE_FILTERS:
    raise ConfigError(f"--tflite-filters: {filters!r} is not one of {', '.join(TFLITE_FILTERS)}")
  return filters


GRAPH_FORMATS = ("onnx", "c", "tflite")
"""The formats that write DAGs (DARTS final networks)."""


def _graph_tflite_module():
  try:
    from qdarts.export import graph_tflite  # noqa: PLC0415
  except ImportError as e:
    raise ConfigError(
      f"--format tflite needs LiteRT: pip install 'qdarts[tflite]' ({e.name} is missing)"
    ) from None
  return graph_tflite


def _graph_builder(fmt: str, filters: str = "int8") -> Callable[[QuantizedGraph], object]:
  """The in-memory writer of ``fmt`` for DAGs; each raises ValueError naming the node it
  cannot express."""
  if fmt == "onnx":
    return build_graph_model
  if fmt == "c":
    return lambda graph: render_graph_c(to_integer_graph(graph))
  int8 = filters == "int8"
  return lambda graph: _graph_tflite_module().build_graph_tflite(graph, int8_filters=int8)


def _graph_record(logits: np.ndarray, reference: np.ndarray, igraph: IntegerGraph) -> dict:
  gap = np.abs(logits.astype(np.float64) - reference) / igraph.logit_scale.astype(np.float64)
  return {
    "verified": True,
    "samples": int(len(logits)),
    "prediction_agreement": float((logits.argmax(-1) == reference.argmax(-1)).mean()),
    "max_logit_diff_lsb": float(gap.max()),
  }


ONNX_VERIFIED_LEVELS = ("extended", "all")  # "all" is ORT's default session


def _verify_graph_onnx(path: Path, igraph: IntegerGraph, x: np.ndarray) -> dict:
  """ONNX Runtime against the integer model in its ``"ort"`` form (ORT's float32
  requantization, :func:`~qdarts.export.graph_integer.as_ort`): every tensor's codes at each of
  :data:`ONNX_VERIFIED_LEVELS`, and the float logits of the last."""
  ort_graph = as_ort(igraph)
  reference = integer_graph_trace(ort_graph, x)
  worst, logits = 0, None
  for level in ONNX_VERIFIED_LEVELS:
    codes = run_graph_onnx_codes(path, ort_graph, x, level)
    logits = codes.pop(OUTPUT_NAME)
    worst = max(worst, *(int(np.abs(c - reference[k]).max(initial=0)) for k, c in codes.items()))
  record = _graph_record(logits, integer_graph_forward(ort_graph, x), igraph)
  record["max_code_diff"] = worst
  record["bit_exact"] = worst == 0
  record["levels"] = list(ONNX_VERIFIED_LEVELS)
  return record


def _verify_graph_c(path: Path, igraph: IntegerGraph, x: np.ndarray) -> dict:
  if find_c_compiler() is None:
    return {"verified": False, "why": "no C compiler on this machine"}
  codes = quantize_graph_input(igraph, x).astype(np.uint8)
  with tempfile.TemporaryDirectory(prefix="qdarts_c_") as tmp:
    out = run_c_runner(build_graph_c_runner(path, Path(tmp) / "runner"), codes)
  expected = integer_graph_trace(igraph, x)[igraph.nodes[-1].node.name]
  record = _graph_record(out.logits, integer_graph_forward(igraph, x), igraph)
  record["bit_exact"] = bool(np.array_equal(out.accumulators, expected))
  return record


def _verify_graph_tflite(path: Path, igraph: IntegerGraph, x: np.ndarray) -> dict:
  """LiteRT's builtin kernels against the integer model in their rounding (``"litert"``, with
  the model's filter containers), then LiteRT's default runtime, XNNPACK, against the integer
  model in float32 single rounding (the ``"ort"`` form,
  :func:`~qdarts.export.graph_integer.as_ort`; ONNX Runtime's and the fake-quant network's
  predictions): the logits (float32, in accumulator LSBs) and every node's tensor
  (``xnnpack_max_code_diff``; measured 0 on the digits and Fashion-MNIST DARTS runs, every test
  input)."""
  from qdarts.export.tflite import run_tflite  # noqa: PLC0415 (optional)

  filters = _filters(path)
  litert = as_litert(igraph, int8_filters=filters == "int8")
  record = _graph_record(run_tflite(path, x, kernels="builtin"),
                         integer_graph_forward(litert, x), igraph)  # fmt: skip
  ort_graph = as_ort(igraph)
  single = _graph_record(run_tflite(path, x, kernels="xnnpack"),
                         integer_graph_forward(ort_graph, x), igraph)  # fmt: skip
  reference = integer_graph_trace(ort_graph, x)
  xnnpack = _graph_tflite_module().node_codes(path, igraph, x, "xnnpack")
  worst = max(int(np.abs(c - reference[k]).max(initial=0)) for k, c in xnnpack.items())
  return {
    **record,
    "kernels": "builtin (litert rounding)",
    "filters": filters,
    "xnnpack_prediction_agreement": single["prediction_agreement"],
    "xnnpack_max_logit_diff_lsb": single["max_logit_diff_lsb"],
    "xnnpack_max_code_diff": worst,
    "xnnpack_reference": "integer model, float32 single rounding (as ONNX Runtime)",
  }


def _write_graph_tflite(graph: QuantizedGraph, path: Path, filters: str):
  return _graph_tflite_module().export_graph_tflite(graph, path, int8_filters=filters == "int8")


_GRAPH_WRITERS = {  # (graph, path, tflite filters)
  "onnx": lambda graph, path, filters: export_graph_onnx(graph, path),
  "c": lambda graph, path, filters: export_graph_c(graph, path),
  "tflite": _write_graph_tflite,
}
_GRAPH_VERIFIERS = {
  "onnx": _verify_graph_onnx,
  "c": _verify_graph_c,
  "tflite": _verify_graph_tflite,
}


def check_formats(
  subnet: QuantizedChain | QuantizedGraph, formats, tflite_filters: str = "int8"
) -> None:
  """Builds every format in memory, writing nothing: a format that cannot express the SubNet
  (an op it has no kernel for, a layer kind it does not know) fails here, before any file of
  any format is written.

  Raises:
    ConfigError: ``--format FMT: <the writer's message, naming the layer>``.
  """
  check_tflite_filters(tflite_filters)
  for fmt in formats:
    try:
      if isinstance(subnet, QuantizedGraph):
        _graph_builder(fmt, tflite_filters)(subnet)
      else:
        _BUILDERS[fmt](subnet, tflite_filters)
    except ValueError as e:  # the SubNet breaks a rule of this format (the message names it)
      raise ConfigError(f"--format {fmt}: {' '.join(str(e).split())}") from None


def parse_formats(spec: str) -> tuple[str, ...]:
  """``"all"`` or a comma-separated list of ``FORMATS``."""
  formats = FORMATS if spec == "all" else tuple(f.strip() for f in spec.split(","))
  unknown = [f for f in formats if f not in FORMATS]
  if unknown or not formats:
    raise ConfigError(
      f"--format: {unknown[0] if unknown else spec!r} is not one of {', '.join(FORMATS)}, all"
    )
  return formats


def _export_and_verify_graph(
  graph: QuantizedGraph, out_dir: Path, formats, x_verify: np.ndarray, filters: str
) -> dict[str, dict]:
  """Each of :data:`GRAPH_FORMATS` (:func:`check_formats` refuses the others) against
  :func:`~qdarts.export.graph_integer.integer_graph_forward`."""
  check_formats(graph, formats, filters)
  try:
    igraph = to_integer_graph(graph)
  except ValueError as e:
    raise ConfigError(f"integer model: {' '.join(str(e).split())}") from None
  results = {}
  for fmt in formats:
    path = Path(out_dir) / ARTIFACT[fmt]
    _GRAPH_WRITERS[fmt](graph, path, filters)
    results[fmt] = {"path": ARTIFACT[fmt], **_GRAPH_VERIFIERS[fmt](path, igraph, x_verify)}
  return results


def export_and_verify(
  chain: QuantizedChain | QuantizedGraph,
  out_dir: Path,
  formats,
  x_verify: np.ndarray,
  *,
  tflite_filters: str = "int8",
) -> dict[str, dict]:
  """Writes each format into ``out_dir`` and checks it on ``x_verify`` (``(N, H, W, C)`` float
  network inputs) against the integer reference; ``tflite_filters`` is one of
  :data:`TFLITE_FILTERS`.

  Returns:
    ``{format: {"path", "verified", "samples", "prediction_agreement", "max_logit_diff_lsb",
    ...}}``.

  Raises:
    ConfigError: a format cannot express this SubNet (named), or its runtime is missing; then
      nothing is written (:func:`check_formats` runs first).
  """
  if isinstance(chain, QuantizedGraph):
    return _export_and_verify_graph(chain, out_dir, formats, x_verify, tflite_filters)
  check_formats(chain, formats, tflite_filters)
  try:
    ichain = to_integer_chain(chain)
  except ValueError as e:  # e.g. an int32 accumulator that could overflow (named)
    raise ConfigError(f"integer model: {' '.join(str(e).split())}") from None
  results = {}
  for fmt in formats:
    path = Path(out_dir) / ARTIFACT[fmt]
    _WRITERS[fmt](chain, path, tflite_filters)
    results[fmt] = {"path": ARTIFACT[fmt], **_VERIFIERS[fmt](path, ichain, x_verify, chain)}
  return results


def verification_inputs(
  chain: QuantizedChain | QuantizedGraph, data_dir: str | None, n: int = 256
) -> np.ndarray:
  """The first ``n`` test inputs of the dataset recorded in the chain's metadata (float NHWC)."""
  from qdarts.data import load_dataset  # noqa: PLC0415 (JAX)
  from qdarts.evaluate import data_config_of  # noqa: PLC0415

  cfg, seed = data_config_of(dict(chain.metadata), Path("subnet.npz"))
  if data_dir is not None:
    cfg = type(cfg)(**{**cfg.__dict__, "data_dir": data_dir})
  data = load_dataset(cfg, seed)
  return np.asarray(data.to_input(data.x_test[:n]), np.float32)


def export_run(
  run_dir: str | Path, formats, data_dir: str | None = None, tflite_filters: str = "int8"
) -> dict[str, dict]:
  """``qdarts export``: every format of ``run_dir/subnet.npz``, verified, and recorded in the
  run's ``result.json`` (artifacts with size and SHA-256, and ``export_verification``).

  Raises:
    ConfigError: not a run folder with a SubNet, or a format cannot be written (named).
  """
  from qdarts.export.graph_file import load_subnet  # noqa: PLC0415
  from qdarts.run_dir import atomic_write_json, file_digest  # noqa: PLC0415

  run_dir = Path(run_dir)
  if not run_dir.is_dir():
    raise ConfigError(f"{run_dir}: not a folder (give a run folder of `qdarts search`)")
  if not (run_dir / "subnet.npz").exists():
    raise ConfigError(
      f"{run_dir}: no exportable SubNet (subnet.npz is missing: not a finished qdarts run)"
    )
  chain = load_subnet(run_dir / "subnet.npz")
  check_formats(chain, formats, tflite_filters)  # before loading the data: fail fast
  x_verify = verification_inputs(chain, data_dir)
  results = export_and_verify(chain, run_dir, formats, x_verify, tflite_filters=tflite_filters)
  result_path = run_dir / "result.json"
  if result_path.exists():
    import json  # noqa: PLC0415

    result = json.loads(result_path.read_text())
    artifacts = {a["path"]: a for a in result.get("artifacts", [])}
    for record in results.values():
      path = run_dir / record["path"]
      files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
      for f in files:
        artifacts[str(f.relative_to(run_dir))] = {
          **file_digest(f),
          "path": str(f.relative_to(run_dir)),
        }
    result["artifacts"] = list(artifacts.values())
    result["export_verification"] = {**result.get("export_verification", {}), **results}
    atomic_write_json(result_path, result)
  return results
