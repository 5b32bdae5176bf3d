"""How well the per-layer rows of `qdarts profile` rank and predict whole SubNets' latency.

Profiles the quickstart space (or ``--config``) into a temporary CSV, samples random SubNets
(a random fitting op per choice point, random bits from the config), exports each with the
project's exporter and times it end to end in ONNX Runtime with the same session options (1
thread, batch 1, median). The prediction of a SubNet is the sum of its layers' rows, stem and
classifier included, looked up through ``hwcost.LutCostModel`` (bitfusion45 as the unused
fallback; every layer should be ``measured:exact``). Prints the Spearman rank correlation and
the mean absolute percentage error between predicted and measured latency.

Usage::

  python bench/profile_fidelity.py --subnets 20
"""

import argparse
import sys
import tempfile
import time
from collections import Counter
from importlib import resources
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", type=Path, default=ROOT / "configs" / "quickstart.yaml")
  parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
  parser.add_argument("--subnets", type=int, default=20, help="random SubNets to time (>= 2)")
  parser.add_argument("--repeats", type=int, default=50, help="timed runs (median taken)")
  parser.add_argument("--warmup", type=int, default=10, help="untimed runs first")
  parser.add_argument("--seed", type=int, default=0, help="seed of the SubNet sampling")
  args = parser.parse_args(argv)
  if args.subnets < 2:
    parser.error("--subnets must be at least 2")
  start = time.perf_counter()

  import onnx  # noqa: PLC0415
  from flax import nnx  # noqa: PLC0415
  from scipy.stats import spearmanr  # noqa: PLC0415

  from hwcost import LutCostModel, load_target, read_measured_csv  # noqa: PLC0415
  from hwcost.measured_rows import layer_key  # noqa: PLC0415
  from qdarts.config import load_config  # noqa: PLC0415
  from qdarts.export import export_onnx  # noqa: PLC0415
  from qdarts.export.from_subnet import chain_from_subnet  # noqa: PLC0415
  from qdarts.profile import (  # noqa: PLC0415
    FIXED_BITS,
    ProfileItem,
    layer_model,
    profile_config,
    space_layers,
    time_model,
  )
  from search_spaces import Choice  # noqa: PLC0415

  cfg = load_config(args.config, args.overrides)
  tmp = Path(tempfile.mkdtemp(prefix="qdarts-fidelity-"))
  csv_path = tmp / "rows.csv"
  t0 = time.perf_counter()
  measured = profile_config(cfg, csv_path, repeats=args.repeats, warmup=args.warmup)
  profile_s = time.perf_counter() - t0
  rows = read_measured_csv(csv_path)
  exact = {row.key: row.values["latency_ms"] for row in rows.rows}
  fallback = load_target(str(resources.files("qdarts.configs.targets") / "bitfusion45.yaml"))
  lut = LutCostModel(rows, fallback, name="onnxruntime-cpu")

  data, space, net, _, _ = space_layers(cfg)
  x = np.asarray(data.to_input(data.x_weight[:256]))
  net.calibrate(x)
  rng = np.random.default_rng(args.seed)
  mask = space.op_mask()
  predicted, actual, exact_sums, n_layers = [], [], [], []
  provenance = Counter()
  t0 = time.perf_counter()
  for i in range(args.subnets):
    choices = []
    for fits in mask:
      ops = [space.op_names[o] for o, ok in enumerate(fits) if ok]
      choices.append(
        Choice(
          str(rng.choice(ops)), int(rng.choice(cfg.quant.w_bits)), int(rng.choice(cfg.quant.a_bits))
        )
      )
    sub = space.build(cfg.quant.w_bits, cfg.quant.a_bits, nnx.Rngs(cfg.seed + i + 1), choices)
    sub.inherit(net, choices, space.op_names)
    layers = [(spec, FIXED_BITS, FIXED_BITS) for spec in space.fixed_layers(sub)]
    for row, choice in zip(space.candidate_layers(sub), choices, strict=True):
      for specs in row:
        layers += [(spec, choice.w_bits, choice.a_bits) for spec in specs or ()]
    costs = [lut.cost(spec, w, a) for spec, w, a in layers]
    provenance.update(c.provenance.split(" (")[0] for c in costs)
    predicted.append(sum(c.values["latency_ms"] for c in costs))
    exact_sums.append(sum(exact[layer_key(spec, (w, a))] for spec, w, a in layers))
    n_layers.append(len(layers))
    chain = chain_from_subnet(
      sub.quantized_layers(space.op_names), space.input_shape, space.num_classes, {}
    )
    path = export_onnx(chain, tmp / f"subnet{i}.onnx")
    actual.append(time_model(onnx.load(path), args.repeats, args.warmup, cfg.seed))
  subnets_s = time.perf_counter() - t0

  # The cost of one session.run call on a near-empty graph (the conv stem's input Q/DQ only).
  stem = measured[0][0].spec  # the fixed stem, at 8/8 bits: no Clip
  probe = layer_model(ProfileItem(stem, FIXED_BITS, FIXED_BITS))
  del probe.graph.node[2:]  # keep the input quantizer only: Q, DQ
  overhead = _run_overhead(probe, args.repeats, args.warmup)

  pred, meas = np.asarray(predicted), np.asarray(actual)
  rho, p = spearmanr(pred, meas)
  mape = float(np.mean(np.abs(pred - meas) / meas)) * 100
  agree = bool(np.allclose(pred, np.asarray(exact_sums), rtol=1e-9))
  print(f"config: {args.config} {' '.join(args.overrides)} ({cfg.space.name} space)")
  print(
    f"profile: {len(measured)} layer rows in {profile_s:.1f} s; SubNets: {args.subnets} "
    f"({np.mean(n_layers):.1f} layer rows each on average) timed in {subnets_s:.1f} s"
  )
  print(f"row provenance: {dict(provenance)}; LUT sum == exact-key CSV sum: {agree}")
  print(f"{'subnet':>6} {'predicted ms':>13} {'measured ms':>12} {'error':>8}")
  for i, (a, b) in enumerate(zip(pred, meas, strict=True)):
    print(f"{i:>6} {a:>13.4f} {b:>12.4f} {(a - b) / b:>+8.1%}")
  print(f"N = {args.subnets} SubNets")
  print(f"Spearman rho = {rho:.3f} (p = {p:.2g})")
  print(f"MAPE = {mape:.1f}%  (mean predicted {pred.mean():.4f} ms, measured {meas.mean():.4f} ms)")
  corrected = pred - (np.asarray(n_layers) - 1) * overhead
  mape_c = float(np.mean(np.abs(corrected - meas) / meas)) * 100
  print(
    f"MAPE = {mape_c:.1f}% with the call overhead counted once per SubNet "
    f"(prediction - (layers - 1) x {overhead:.4f} ms; "
    f"rho = {spearmanr(corrected, meas)[0]:.3f})"
  )
  print(
    "included in the prediction: every conv of the SubNet (stem included) with its input "
    "Q/DQ, ReLU and an output Q, and the classifier's input Q/DQ + Gemm, each timed alone."
  )
  print(
    "not included: the global average pool (its Q/DQ and the mean) and the requantize after "
    "the classifier's Flatten; counted once per layer instead of once per model: the "
    f"session.run call overhead (~{overhead:.4f} ms on a near-empty graph here) and a second "
    "quantizer per layer boundary."
  )
  print(f"wall time: {time.perf_counter() - start:.1f} s")
  return 0


def _run_overhead(model, repeats: int, warmup: int) -> float:
  from onnx import TensorProto, helper  # noqa: PLC0415

  from qdarts.profile import time_model  # noqa: PLC0415

  graph = model.graph
  last = graph.node[-1].output[0]
  used = {name for node in graph.node for name in node.input}
  kept = [t for t in graph.initializer if t.name in used]
  del graph.initializer[:]
  graph.initializer.extend(kept)
  shape = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
  del graph.output[:]
  graph.output.append(helper.make_tensor_value_info(last, TensorProto.FLOAT, shape))
  return time_model(model, repeats, warmup)


if __name__ == "__main__":
  sys.exit(main())
