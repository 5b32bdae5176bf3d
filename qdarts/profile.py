"""Measured per-layer latency on ONNX Runtime (CPU): the rows ``hwcost.read_measured_csv`` reads.

For each distinct layer of a search space (every candidate conv at every ``(w_bits, a_bits)``
of the config, plus the fixed stem and classifier at 8/8 bits), :func:`layer_model` builds a
one-layer model with the ONNX writer's own node builders (:mod:`qdarts.export.graph_onnx`):

  conv:   x → Q(s_a) [→ Clip] → the conv as exported (8-bit weights: DQ → Conv → Q, which ORT
          fuses into QLinearConv; INT4: a float32 Conv of integer values → Q per channel)
  linear: x → Q(s_a) [→ Clip] → DQ → Gemm(·, DQ(W), DQ(b); transB=1)

at opset 21, IR version 10, with random weights (fixed seed). The conv's output Q stands for
the next layer's input quantizer (unsigned: the ReLU is its clamp at 0). :func:`time_model`
runs it in a single-threaded CPU session (the ``"extended"`` optimization level of
:func:`qdarts.export.run_onnx`), batch 1, and takes the median of ``repeats`` timed runs after
``warmup`` untimed ones.

What a row includes: the layer's input Q [Clip] and DQ, the conv or Gemm, the output Q, and one
``session.run`` call's overhead. What no row covers: the global average pool and the adds
(per-model overhead of an exported SubNet).
"""

import dataclasses
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from hwcost import LayerSpec
from hwcost.measured_rows import COLUMNS, layer_key
from qdarts.export import graph_onnx
from qdarts.export import onnx as qonnx
from qdarts.export.graph_integer import IntNode, to_integer_graph
from qdarts.export.graph_ir import INPUT, GConv, GGlobalAvgPool, GLinear, Grid, QuantizedGraph
from qdarts.run_dir import atomic_write_text
from quant import weight_qrange
from search_spaces import same_padding

RUNTIMES = ("onnxruntime",)
FIXED_BITS = 8
_OUT_STEP = 0.05


@dataclass(frozen=True)
class ProfileItem:
  """One distinct layer to time: its shape and bits."""

  spec: LayerSpec
  w_bits: int
  a_bits: int

  @property
  def key(self) -> tuple:
    return layer_key(self.spec, (self.w_bits, self.a_bits))


def space_items(
  candidate_layers: Sequence[Sequence[Sequence[LayerSpec] | None]],
  fixed_layers: Sequence[LayerSpec],
  w_bits: Sequence[int],
  a_bits: Sequence[int],
) -> list[ProfileItem]:
  """The distinct (layer shape, w_bits, a_bits) of a space, fixed layers first at 8/8 bits.

  Args:
    candidate_layers: ``L × O`` LayerSpec lists (``space.candidate_layers(net)``).
    fixed_layers: the stem and classifier (``space.fixed_layers(net)``).
    w_bits: the config's weight bit-widths.
    a_bits: the config's activation bit-widths.

  Returns:
    One item per distinct :func:`hwcost.measured_rows.layer_key`, in first-seen order.
  """
  items: dict[tuple, ProfileItem] = {}

  def add(spec: LayerSpec, w: int, a: int) -> None:
    item = ProfileItem(spec, int(w), int(a))
    items.setdefault(item.key, item)

  for spec in fixed_layers:
    add(spec, FIXED_BITS, FIXED_BITS)
  for row in candidate_layers:
    for specs in row:
      for spec in specs or ():
        for w in w_bits:
          for a in a_bits:
            add(spec, w, a)
  return list(items.values())


def _random_weights(rng, shape: tuple[int, ...], cout: int, w_bits: int):
  weight = rng.normal(0.0, 0.1, shape).astype(np.float32)
  _, qmax = weight_qrange(w_bits)
  w_step = (np.abs(weight.reshape(-1, cout)).max(axis=0) / qmax + 1e-6).astype(np.float32)
  bias = rng.normal(0.0, 0.01, cout).astype(np.float32)
  return weight, w_step, bias


def _layer_node(item: ProfileItem, rng) -> tuple[IntNode, Grid]:
  """The layer as the ONNX export writes it: its node of a one-layer graph in the ``"ort"``
  form, and the input grid. A conv is followed by a pool and a classifier only because a
  graph must end in one; they are not written."""
  spec = item.spec
  in_grid, out_grid = (
    Grid(1.0 / (2**item.a_bits - 1), item.a_bits, False),
    Grid(_OUT_STEP, 8, False),
  )
  if spec.op == "conv":
    shape = (spec.kernel, spec.kernel, spec.cin // spec.groups, spec.cout)
    weight, w_step, bias = _random_weights(rng, shape, spec.cout, item.w_bits)
    padding = tuple(same_padding(n, spec.kernel, spec.stride) for n in spec.in_hw)
    layer = GConv("layer", (INPUT,), weight, bias, w_step, item.w_bits, out_grid,
                  stride=spec.stride, padding=padding, groups=spec.groups)  # fmt: skip
    fc_weight, fc_step, fc_bias = _random_weights(rng, (spec.cout, 1), 1, FIXED_BITS)
    fc = GLinear("fc", ("pool",), fc_weight, fc_bias, fc_step, FIXED_BITS)
    nodes, in_shape, classes = (
      (layer, GGlobalAvgPool("pool", ("layer",), out_grid), fc),
      (*spec.in_hw, spec.cin),
      1,
    )
  else:
    weight, w_step, bias = _random_weights(rng, (spec.cin, spec.cout), spec.cout, item.w_bits)
    fc = GLinear("layer", ("pool",), weight, bias, w_step, item.w_bits)
    nodes, in_shape, classes = (
      (GGlobalAvgPool("pool", (INPUT,), in_grid), fc),
      (1, 1, spec.cin),
      spec.cout,
    )
  graph = QuantizedGraph(nodes, in_shape, in_grid, classes)
  node = next(n for n in to_integer_graph(graph, rounding="ort").nodes if n.node.name == "layer")
  if spec.op != "conv":  # the classifier reads the model input itself
    node = dataclasses.replace(node, node=dataclasses.replace(node.node, inputs=(INPUT,)))
  return node, in_grid


def layer_model(item: ProfileItem, seed: int = 0) -> onnx.ModelProto:
  """The one-layer model of ``item`` (see the module docstring), checked.

  Args:
    item: the layer shape and bits.
    seed: seed of the random weights and biases.

  Returns:
    A model at opset 21, IR version 10; input ``"input"`` float32 ``[1, cin, H, W]`` (conv) or
    ``[1, cin]`` (linear); output ``"output"``, the conv's uint8 codes or the float logits.
  """
  spec = item.spec
  node, in_grid = _layer_node(item, np.random.default_rng(seed))
  g = qonnx._Graph()
  graph_onnx._quantize(g, INPUT, INPUT, in_grid)
  if spec.op == "conv":
    g.node("Identity", [graph_onnx._conv(g, node)], "output")
    inputs, outputs, out_type = (
      [1, spec.cin, *spec.in_hw],
      [1, spec.cout, *spec.out_hw],
      TensorProto.UINT8,
    )
  else:
    g.node("Identity", [graph_onnx._linear(g, node)], "output")
    inputs, outputs, out_type = [1, spec.cin], [1, spec.cout], TensorProto.FLOAT
  graph = helper.make_graph(
    g.nodes,
    "qdarts_profile_layer",
    [helper.make_tensor_value_info(qonnx.INPUT_NAME, TensorProto.FLOAT, inputs)],
    [helper.make_tensor_value_info("output", out_type, outputs)],
    initializer=g.initializers,
  )
  model = helper.make_model(
    graph, opset_imports=[helper.make_opsetid("", qonnx.OPSET)], producer_name="qdarts"
  )
  model.ir_version = qonnx.IR_VERSION
  onnx.checker.check_model(model, full_check=True)
  return model


def make_session(model: onnx.ModelProto | str | Path):
  """A single-threaded CPU ORT session at the exporter's ``"extended"`` optimization level."""
  import onnxruntime as ort  # noqa: PLC0415 (heavy)

  options = ort.SessionOptions()
  options.intra_op_num_threads = 1
  options.inter_op_num_threads = 1
  options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
  options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
  options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
  source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
  return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def time_session(session, feed: dict[str, np.ndarray], repeats: int, warmup: int) -> float:
  """Median wall time in ms of ``session.run(None, feed)``: ``repeats`` runs after ``warmup``."""
  for _ in range(warmup):
    session.run(None, feed)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    session.run(None, feed)
    times.append(time.perf_counter() - start)
  return statistics.median(times) * 1e3


def time_model(model: onnx.ModelProto, repeats: int, warmup: int, seed: int = 0) -> float:
  """Median batch-1 latency in ms of a model with one float input in [0, 1]."""
  session = make_session(model)
  (inp,) = session.get_inputs()
  shape = [1 if not isinstance(d, int) else d for d in inp.shape]
  x = np.random.default_rng(seed).random(shape, dtype=np.float32)
  return time_session(session, {inp.name: x}, repeats, warmup)


def profile_items(
  items: Sequence[ProfileItem],
  repeats: int,
  warmup: int,
  seed: int = 0,
  on_item: Callable[[ProfileItem, float], None] | None = None,
) -> list[tuple[ProfileItem, float]]:
  """Times every item; returns ``(item, latency_ms)`` pairs in order."""
  out = []
  for item in items:
    ms = time_model(layer_model(item, seed), repeats, warmup, seed)
    out.append((item, ms))
    if on_item is not None:
      on_item(item, ms)
  return out


def rows_csv(measured: Sequence[tuple[ProfileItem, float]], comments: Sequence[str] = ()) -> str:
  """The measured CSV text (``energy_uj`` left empty)."""
  lines = [f"# {c}" for c in comments]
  lines.append(",".join(COLUMNS))
  for item, ms in measured:
    s = item.spec
    fields = (
      s.op, s.kernel, s.stride, s.groups, s.cin, s.cout, *s.in_hw, *s.out_hw,
      item.w_bits, item.a_bits, f"{max(ms, 1e-6):.6g}", "",
    )  # fmt: skip
    lines.append(",".join(str(f) for f in fields))
  return "\n".join(lines) + "\n"


def space_layers(cfg):
  """``(data, space, net, candidate_layers, fixed_layers)`` of a config, built as
  :func:`qdarts.pipeline.prepare` builds them."""
  from qdarts.data import load_dataset  # noqa: PLC0415
  from qdarts.pipeline import build_space  # noqa: PLC0415

  data = load_dataset(cfg.data, cfg.seed)
  space, net = build_space(cfg, data)
  return data, space, net, space.candidate_layers(net), space.fixed_layers(net)


def profile_config(
  cfg,
  out: str | Path,
  *,
  repeats: int = 50,
  warmup: int = 10,
  progress: bool = True,
) -> list[tuple[ProfileItem, float]]:
  """Profiles every distinct layer of ``cfg``'s space and writes the CSV to ``out`` atomically.

  Args:
    cfg: a loaded :class:`qdarts.config.Config`.
    out: destination CSV; its folder must exist.
    repeats: timed runs per layer (median taken).
    warmup: untimed runs first.
    progress: show a rich progress bar.

  Returns:
    The ``(item, latency_ms)`` pairs written.
  """
  import onnxruntime as ort  # noqa: PLC0415

  _, _, _, candidates, fixed = space_layers(cfg)
  items = space_items(candidates, fixed, cfg.quant.w_bits, cfg.quant.a_bits)
  if progress:
    from rich.progress import (  # noqa: PLC0415
      BarColumn,
      MofNCompleteColumn,
      Progress,
      TextColumn,
      TimeElapsedColumn,
    )

    with Progress(
      TextColumn("profile"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
      TextColumn("{task.fields[layer]}"),
    ) as bar:  # fmt: skip
      task = bar.add_task("profile", total=len(items), layer="")

      def advance(item: ProfileItem, ms: float) -> None:
        layer = f"{item.spec.name} w{item.w_bits}a{item.a_bits}: {ms:.4f} ms"
        bar.update(task, advance=1, layer=layer)

      measured = profile_items(items, repeats, warmup, cfg.seed, advance)
  else:
    measured = profile_items(items, repeats, warmup, cfg.seed)
  comments = (
    f"qdarts profile of {cfg.name} ({cfg.space.name} space): onnxruntime {ort.__version__}, "
    f"CPUExecutionProvider, 1 thread, batch 1, median of {repeats} runs after {warmup}",
    f"machine: {platform.machine()} {platform.processor() or platform.system()}",
    "each row: input Q/DQ, conv or Gemm, ReLU, output Q and one session.run call",
  )
  atomic_write_text(Path(out), rows_csv(measured, comments))
  return measured
