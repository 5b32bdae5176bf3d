"""`qdarts eval MODEL`: accuracy and latency of an exported model in its own runtime.

The model's metadata names its dataset and the exact test split (the run's ``data`` section
and seed), so a deployed artifact is checked in one command against the numbers of its run.
Runtimes are looked up by file kind: ``.onnx`` → ONNX Runtime, ``.tflite`` → LiteRT, a C
export folder (``manifest.json``) → the compiled C reference.
"""

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qdarts.config import DataConfig, build_section
from qdarts.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
  """How to run one kind of exported model.

  Attributes:
    name: shown to the user.
    metadata: ``path -> {key: value}`` of the model's recorded metadata.
    runner: ``path -> (x_nhwc float32 (N, H, W, C) -> logits (N, K))``: loads once.
  """

  name: str
  metadata: Callable[[Path], dict]
  runner: Callable[[Path], Callable[[np.ndarray], np.ndarray]]


def _onnx_metadata(path: Path) -> dict:
  import onnx  # noqa: PLC0415

  try:
    model = onnx.load(str(path), load_external_data=False)
  except Exception as e:  # onnx raises DecodeError and others for a foreign file
    raise ConfigError(f"{path}: not an ONNX model ({e.__class__.__name__})") from None
  return {p.key: p.value for p in model.metadata_props}


def _onnx_runner(path: Path):
  """ONNX Runtime at its default level, ``"all"`` (the ONNX export is exact there)."""
  from qdarts.export.onnx import nchw_input, ort_session  # noqa: PLC0415

  session = ort_session(path, "all")
  name = session.get_inputs()[0].name

  def run(x: np.ndarray) -> np.ndarray:
    return session.run(None, {name: nchw_input(x)})[0]

  return run


def _tflite_metadata(path: Path) -> dict:
  """The ``qdarts`` metadata entry of a ``.tflite`` file (TFLite magic ``TFL3`` checked first)."""
  data = path.read_bytes()
  if len(data) < 8 or data[4:8] != b"TFL3":
    raise ConfigError(f"{path}: not a TFLite model (no TFL3 file identifier)")
  try:
    from qdarts.export.tflite import read_metadata  # noqa: PLC0415
  except ImportError as e:
    raise ConfigError(
      f"{path}: evaluating TFLite needs LiteRT: pip install 'qdarts[tflite]' ({e.name} is missing)"
    ) from None
  try:
    return read_metadata(path)
  except Exception as e:  # flatbuffers raises assorted errors on a damaged buffer
    raise ConfigError(
      f"{path}: not a readable qdarts TFLite model ({e.__class__.__name__})"
    ) from None


def _tflite_runner(path: Path):
  """LiteRT's default kernels (XNNPACK where it applies), one interpreter, batch resized."""
  from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

  interpreter = Interpreter(model_path=str(path), num_threads=1)
  (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
  shape = [None]

  def run(x: np.ndarray) -> np.ndarray:
    if shape[0] != x.shape:
      interpreter.resize_tensor_input(inp["index"], list(x.shape), strict=True)
      interpreter.allocate_tensors()
      shape[0] = x.shape
    interpreter.set_tensor(inp["index"], np.ascontiguousarray(x, np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(out["index"]).copy()

  return run


def _c_manifest(path: Path) -> tuple[Path, dict]:
  folder = path.parent if path.name == "manifest.json" else path
  try:
    manifest = json.loads((folder / "manifest.json").read_text())
  except FileNotFoundError:
    raise ConfigError(f"{folder}: not a C export (no manifest.json)") from None
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ConfigError(f"{folder}/manifest.json: not JSON ({e.__class__.__name__})") from None
  from qdarts.export.c_export import FORMAT  # noqa: PLC0415
  from qdarts.export.graph_c import FORMAT as GRAPH_FORMAT  # noqa: PLC0415

  if not isinstance(manifest, dict) or manifest.get("format") not in (FORMAT, GRAPH_FORMAT):
    raise ConfigError(f"{folder}/manifest.json: not a qdarts C export (format is not {FORMAT!r})")
  return folder, manifest


def _c_metadata(path: Path) -> dict:
  return dict(_c_manifest(path)[1].get("metadata", {}))


class _CRunner:
  """Builds the export with the system C compiler once; runs batches through the driver.

  ``sample_seconds`` holds the C-measured time of every ``qdarts_infer`` call of the last batch
  (``clock()``: CPU time of one sample, without process start and file I/O).
  """

  def __init__(self, path: Path) -> None:
    import tempfile  # noqa: PLC0415

    from qdarts.export.c_export import build_c_runner  # noqa: PLC0415
    from qdarts.export.graph_c import FORMAT as GRAPH_FORMAT  # noqa: PLC0415
    from qdarts.export.graph_c import build_graph_c_runner  # noqa: PLC0415

    self.folder, manifest = _c_manifest(path)
    build = build_graph_c_runner if manifest["format"] == GRAPH_FORMAT else build_c_runner
    self.scale = float(manifest["input"]["scale"])
    self.qmax = 2 ** int(manifest["input"]["bits"]) - 1
    self._tmp = tempfile.TemporaryDirectory(prefix="qdarts_eval_c_")
    try:
      self.executable = build(self.folder, Path(self._tmp.name) / "qdarts_run")
    except (RuntimeError, OSError, KeyError, ValueError) as e:
      first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
      raise ConfigError(f"{self.folder}: cannot build the C export ({first})") from None
    self.sample_seconds: list[float] = []

  def __call__(self, x: np.ndarray) -> np.ndarray:
    from qdarts.export.c_export import run_c_runner  # noqa: PLC0415

    codes = np.clip(np.round(np.asarray(x, np.float64) / self.scale), 0, self.qmax)
    result = run_c_runner(self.executable, codes.astype(np.uint8), timed=True)
    self.sample_seconds = list(result.seconds)
    return result.logits


RUNTIMES: dict[str, Runtime] = {
  ".onnx": Runtime("onnxruntime", _onnx_metadata, _onnx_runner),
  ".tflite": Runtime("litert", _tflite_metadata, _tflite_runner),
  "manifest": Runtime("c reference (system cc)", _c_metadata, _CRunner),
}


def runtime_for(path: Path) -> Runtime:
  """The runtime of ``path`` by its kind, or a ConfigError listing the kinds known."""
  key = "manifest" if path.is_dir() or path.name == "manifest.json" else path.suffix
  if key not in RUNTIMES:
    raise ConfigError(
      f"{path}: unknown model kind {key or path.name!r}; known: {', '.join(RUNTIMES)}"
    )
  return RUNTIMES[key]


def data_config_of(metadata: dict, path: Path) -> tuple[DataConfig, int]:
  """The ``DataConfig`` and seed recorded in a model's metadata (key ``data``)."""
  if "data" not in metadata:
    raise ConfigError(
      f"{path}: the model records no dataset (metadata 'data'); pass --dataset and --data-dir"
    )
  try:
    section = json.loads(metadata["data"])
    seed = int(section.pop("seed", 0))
    return build_section(DataConfig, section, f"{path}: metadata data"), seed
  except (ValueError, TypeError, AttributeError) as e:
    raise ConfigError(f"{path}: metadata 'data' is not a data section ({e})") from None


def evaluate(
  path: str | Path,
  *,
  dataset: str | None = None,
  data_dir: str | None = None,
  latency_samples: int = 50,
) -> dict:
  """Accuracy on the recorded (or given) dataset's test split, and median latency per sample.

  Args:
    path: the exported model.
    dataset: another dataset name (default: the model's).
    data_dir: where the dataset files are (default: the usual lookup, see qdarts.datasets).
    latency_samples: single-sample runs timed after one warm-up; the median is reported.

  Returns:
    ``{"model", "runtime", "dataset", "samples", "accuracy", "latency_ms_median"}``.
  """
  from qdarts.data import load_dataset  # noqa: PLC0415 (JAX import, only when evaluating)

  path = Path(path)
  if not path.exists():
    raise ConfigError(f"{path}: model file not found")
  runtime = runtime_for(path)
  metadata = runtime.metadata(path)
  if "data" in metadata or dataset is None:
    cfg, seed = data_config_of(metadata, path)
  else:  # a model from elsewhere: the named dataset's default split
    cfg, seed = DataConfig(dataset=dataset), 0
  updates = {k: v for k, v in (("dataset", dataset), ("data_dir", data_dir)) if v is not None}
  cfg = DataConfig(**{**cfg.__dict__, **updates})
  data = load_dataset(cfg, seed)
  x, y = np.asarray(data.to_input(data.x_test), np.float32), np.asarray(data.y_test)
  run = runtime.runner(path)
  try:
    run(x[:1])
  except ConfigError:
    raise
  except Exception as e:  # the runtime's own error type: a model for other inputs
    raise ConfigError(
      f"{path}: {runtime.name} cannot run it on {data.name} inputs of shape "
      f"{tuple(x.shape[1:])} ({e.__class__.__name__})"
    ) from None
  logits = np.concatenate([run(x[i : i + 256]) for i in range(0, len(x), 256)])
  if logits.shape != (len(y), data.num_classes):
    raise ConfigError(
      f"{path}: the model gives outputs of shape {logits.shape[1:]}, "
      f"{data.name} has {data.num_classes} classes"
    )
  times = []
  if isinstance(run, _CRunner):  # timed inside C: a process per sample would time the OS
    run(x[:latency_samples])
    times = run.sample_seconds
  for i in range(min(latency_samples, len(x)) if not times else 0):
    t0 = time.perf_counter()
    run(x[i : i + 1])
    times.append(time.perf_counter() - t0)
  return {
    "model": str(path),
    "runtime": runtime.name,
    "dataset": data.name,
    "samples": int(len(y)),
    "accuracy": float((logits.argmax(-1) == y).mean()),
    "latency_ms_median": 1000 * statistics.median(times),
  }
