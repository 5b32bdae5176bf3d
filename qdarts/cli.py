"""The `qdarts` command. Kept short: each subcommand is an `add_*_parser` / `run_*` pair.

Heavy imports (jax, onnx) happen inside `run_*`, so `qdarts --help` is instant. User errors
(`QdartsError`, `CostTableError`) print one line and exit with code 2; `--debug` shows the
traceback.
"""

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from qdarts.errors import ConfigError, QdartsError, SearchInterrupted

QUICKSTART = "quickstart.yaml"


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # one line, exit code 2 (argparse's own code for usage errors)
    self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_search_parser(subparsers) -> None:
  p = subparsers.add_parser(
    "search",
    help="search, derive, fine-tune and export a SubNet (the whole pipeline)",
    description="Runs the whole pipeline: bilevel search of ops and bit-widths against the "
    "target's cost, derivation of the argmax SubNet, QAT fine-tuning, integer ONNX export, "
    "verification in ONNX Runtime and a report, all in one run folder.",
    epilog="example: qdarts search configs/quickstart.yaml search.epochs=3 cost.weight=0.5",
  )
  p.add_argument(
    "config",
    nargs="?",
    default=None,
    help="YAML config file (default: the packaged configs/quickstart.yaml)",
  )
  p.add_argument(
    "overrides",
    nargs="*",
    metavar="KEY=VALUE",
    help="dotted config overrides, e.g. search.epochs=3 quant.w_bits=[4,8]",
  )
  p.add_argument(
    "--out",
    type=Path,
    default=None,
    help="run folder (default: runs/<config-name>-<timestamp>/ under the current directory)",
  )
  p.add_argument(
    "--resume",
    type=Path,
    default=None,
    metavar="RUN",
    help="continue an interrupted run from its newest checkpoint (its own config)",
  )
  p.add_argument(
    "--distributed",
    action="store_true",
    help="join a multi-host run first (jax.distributed.initialize; coordinator and process ids "
    "from the cluster environment); batches are split over every device of every host",
  )
  p.add_argument(
    "--data-dir",
    default=None,
    help="folder holding the dataset files (overrides data.data_dir; default: "
    "$QDARTS_DATA_DIR, then ~/.cache/qdarts/datasets)",
  )
  p.add_argument(
    "--no-cache",
    action="store_true",
    help="do not use the persistent XLA compilation cache "
    "($QDARTS_CACHE_DIR, default ~/.cache/qdarts/jax)",
  )
  p.set_defaults(func=run_search)


def _config_path(arg: str | None, overrides: list[str]) -> tuple[Path, list[str]]:
  from importlib import resources  # noqa: PLC0415

  if arg is not None and "=" in arg and not Path(arg).exists():
    overrides, arg = [arg, *overrides], None  # only overrides were given
  if arg is None:
    return Path(str(resources.files("qdarts.configs") / QUICKSTART)), overrides
  return Path(arg), overrides


def _enable_compilation_cache() -> None:
  import jax  # noqa: PLC0415

  cache = os.environ.get("QDARTS_CACHE_DIR") or str(Path.home() / ".cache" / "qdarts" / "jax")
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def _resumable_run(args):
  """``--resume RUN``: the run's own config, and the run folder to continue in."""
  from qdarts.config import load_config  # noqa: PLC0415

  run_dir = args.resume
  if args.config is not None or args.overrides or args.out is not None:
    raise ConfigError("--resume RUN takes no config, overrides or --out: the run's own are used")
  if not (run_dir / "config.yaml").is_file():
    raise ConfigError(f"--resume {run_dir}: not a run folder (no config.yaml)")
  if (run_dir / "result.json").exists():
    raise ConfigError(f"--resume {run_dir}: the run is finished (result.json exists)")
  return run_dir / "config.yaml", load_config(run_dir / "config.yaml"), run_dir


def run_search(args) -> int:
  from qdarts import pipeline  # noqa: PLC0415 (imports jax)
  from qdarts.config import load_config  # noqa: PLC0415
  from qdarts.progress import RichReporter  # noqa: PLC0415
  from qdarts.run_dir import new_run_dir  # noqa: PLC0415

  if args.distributed:
    from qdarts.parallel import initialize_distributed  # noqa: PLC0415

    initialize_distributed()
  if args.resume is not None:
    path, cfg, run_dir = _resumable_run(args)
  else:
    path, overrides = _config_path(args.config, args.overrides)
    cfg = load_config(path, overrides)
  if args.data_dir is not None:
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, data_dir=args.data_dir))
  if not args.no_cache:
    _enable_compilation_cache()
  reporter = RichReporter()
  reporter.console.print(f"[bold]qdarts search[/] {path} ({cfg.name})")
  setup = pipeline.prepare(cfg)  # everything that can reject the input, before any write
  if args.resume is None:
    if args.out is not None and args.out.exists() and any(args.out.iterdir()):
      raise ConfigError(f"--out {args.out}: folder exists and is not empty; choose a new one")
    run_dir = new_run_dir(args.out, cfg.name)
  from tensorboardX import SummaryWriter  # noqa: PLC0415

  with SummaryWriter(str(run_dir / "events")) as writer, reporter:
    result = pipeline.run(setup, run_dir, reporter, writer, resume=args.resume is not None)
  reporter.summary(result, run_dir)
  return 0


def add_train_parser(subparsers) -> None:
  p = subparsers.add_parser(
    "train",
    help="train a DARTS genotype's final network as a run of its own (e.g. 600 epochs)",
    description="Builds the final network of a DARTS genotype (train.cells × train.init_channels) "
    "at its searched bits, trains it from scratch with the config's train section, checkpoints "
    "every epoch and writes result.json (test accuracy, exact cost on the target).",
    epilog="example: qdarts train runs/cifar10_darts-…/ configs/cifar10_darts_train.yaml",
  )
  p.add_argument(
    "source",
    nargs="?",
    type=Path,
    default=None,
    help="a DARTS run folder of `qdarts search`, its subnet.json, or a genotype JSON file",
  )
  p.add_argument(
    "config",
    nargs="?",
    default=None,
    help="YAML config (default: the search run's own config.yaml)",
  )
  p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
  p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<name>-…)")
  p.add_argument(
    "--resume", type=Path, default=None, metavar="RUN", help="continue a `qdarts train` run"
  )
  p.add_argument("--data-dir", default=None, help="folder holding the dataset files")
  p.add_argument("--no-cache", action="store_true", help="do not use the compilation cache")
  p.set_defaults(func=run_train)


def _train_inputs(args):
  """``(config path, config, genotype, run folder or None)`` of ``qdarts train``'s arguments."""
  from qdarts.config import load_config  # noqa: PLC0415
  from qdarts.train_genotype import GENOTYPE_FILE, read_genotype  # noqa: PLC0415

  if args.resume is not None:
    if args.source is not None or args.config is not None or args.out is not None:
      raise ConfigError("--resume RUN takes no genotype, config or --out: the run's own are used")
    run_dir = args.resume
    if not (run_dir / "config.yaml").is_file() or not (run_dir / GENOTYPE_FILE).is_file():
      raise ConfigError(f"--resume {run_dir}: not a `qdarts train` run folder")
    if (run_dir / "result.json").exists():
      raise ConfigError(f"--resume {run_dir}: the run is finished (result.json exists)")
    path = run_dir / "config.yaml"
    return path, load_config(path), read_genotype(run_dir / GENOTYPE_FILE), run_dir
  if args.source is None:
    raise ConfigError("train: give the genotype: a DARTS run folder, its subnet.json or a JSON")
  genotype = read_genotype(args.source)
  config, overrides = args.config, list(args.overrides)
  if config is not None and "=" in config and not Path(config).exists():
    config, overrides = None, [config, *overrides]
  if config is None:
    if not (args.source.is_dir() and (args.source / "config.yaml").is_file()):
      raise ConfigError(f"{args.source}: not a run folder with config.yaml; give a CONFIG")
    config = args.source / "config.yaml"
  return Path(config), load_config(Path(config), overrides), genotype, None


def run_train(args) -> int:
  from qdarts.progress import RichReporter  # noqa: PLC0415
  from qdarts.run_dir import new_run_dir  # noqa: PLC0415
  from qdarts.train_genotype import prepare_training, run_training  # noqa: PLC0415

  path, cfg, genotype, run_dir = _train_inputs(args)
  if args.data_dir is not None:
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, data_dir=args.data_dir))
  if not args.no_cache:
    _enable_compilation_cache()
  reporter = RichReporter()
  reporter.console.print(f"[bold]qdarts train[/] {path} ({cfg.name})")
  setup = prepare_training(cfg, genotype)  # rejects bad input before any write
  if run_dir is None:
    if args.out is not None and args.out.exists() and any(args.out.iterdir()):
      raise ConfigError(f"--out {args.out}: folder exists and is not empty; choose a new one")
    run_dir = new_run_dir(args.out, f"{cfg.name}-train")
  with reporter:
    result = run_training(setup, run_dir, reporter, resume=args.resume is not None)
  cost = ", ".join(f"{m} {v:.4g}" for m, v in result["cost"].items())
  print(f"test accuracy (fake-quant): {result['accuracy']['fake_quant']:.4f}; {cost}")
  print(f"run folder: {run_dir}")
  return 0


def add_targets_parser(subparsers) -> None:
  p = subparsers.add_parser(
    "targets",
    help="list the built-in hardware targets",
    description="Lists the built-in targets: name, metrics, precisions.",
  )
  p.set_defaults(func=run_targets)


def run_targets(args) -> int:
  del args
  from rich.console import Console  # noqa: PLC0415
  from rich.table import Table  # noqa: PLC0415

  from qdarts.targets import builtin_targets, resolve_target  # noqa: PLC0415

  table = Table(title="built-in targets (cost.target=NAME, or a path to your own YAML)")
  for col in ("name", "metrics", "precisions (w, a)", "description"):
    table.add_column(col)
  for name in builtin_targets():
    model = resolve_target(name)
    spec = getattr(model, "target", None)
    pairs = (
      "any ≥ 2 bits"
      if spec is None
      else (" ".join(f"w{w}a{a}" for w, a in spec.supported) + f" ({spec.unsupported_policy})")
    )
    description = "MACs × w_bits × a_bits (hardware-agnostic)" if spec is None else spec.description
    table.add_row(name, ", ".join(model.metrics), pairs, description)
  Console().print(table)
  return 0


def add_validate_target_parser(subparsers) -> None:
  p = subparsers.add_parser(
    "validate-target",
    help="check a target YAML file",
    description="Loads and checks a target file; prints what it "
    "provides, or one line naming the file, field and the problem.",
  )
  p.add_argument("file", type=Path, help="target YAML file")
  p.set_defaults(func=run_validate_target)


def run_validate_target(args) -> int:
  from hwcost import load_target  # noqa: PLC0415

  model = load_target(args.file)
  spec = getattr(model, "target", None)
  classes = ", ".join(spec.compute) if spec is not None else "?"
  print(
    f"{args.file}: ok: target {model.name!r}, metrics {', '.join(model.metrics)}, "
    f"op classes {classes}"
  )
  return 0


def add_cost_parser(subparsers) -> None:
  p = subparsers.add_parser(
    "cost",
    help="cost a derived SubNet on a target, layer by layer",
    description="Prints the per-layer cost (shape, bits, every metric, "
    "provenance) of a SubNet saved by `qdarts search`, and the totals.",
  )
  p.add_argument("--target", required=True, help="built-in target name or target YAML path")
  p.add_argument("--subnet", required=True, type=Path, help="RUN/subnet.json")
  p.set_defaults(func=run_cost)


def run_cost(args) -> int:
  from rich.console import Console  # noqa: PLC0415
  from rich.table import Table  # noqa: PLC0415

  from qdarts.cost_report import cost_rows, read_subnet, subnet_layers, totals  # noqa: PLC0415
  from qdarts.targets import resolve_target  # noqa: PLC0415

  doc = read_subnet(args.subnet)
  model = resolve_target(args.target)
  rows = cost_rows(subnet_layers(doc), model)
  table = Table(title=f"{args.subnet} on {model.name}")
  columns = ["layer", "shape", "w_bits", "a_bits", *model.metrics, "provenance"]
  for col in columns:
    table.add_column(col.replace("_", " "), overflow="fold")
  for row in rows:
    cells = [f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in columns]
    cells[-1] = cells[-1].split(" (")[0]  # the source file is printed once, below
    table.add_row(*cells)
  console = Console(width=None if sys.stdout.isatty() else 200)  # files and pipes: no folding
  console.print(table)
  for provenance in sorted({row["provenance"] for row in rows}):
    console.print(f"provenance: {provenance}")
  for metric, value in totals(rows, model.metrics).items():
    console.print(f"total {metric}: {value:.6g}")
  return 0


def add_profile_parser(subparsers) -> None:
  p = subparsers.add_parser(
    "profile",
    help="measure each candidate layer's latency into a measured-rows CSV",
    description="Times every distinct candidate layer of the config's space, at every "
    "(w_bits, a_bits) of its quant section, plus the fixed stem and classifier at 8/8, as a "
    "one-layer QDQ ONNX model in ONNX Runtime on the CPU (1 thread, batch 1, median), and "
    "writes the CSV that a target's `measured: {file: ...}` reads.",
    epilog="example: qdarts profile configs/quickstart.yaml --out rows.csv --repeats 50",
  )
  p.add_argument(
    "config",
    nargs="?",
    default=None,
    help="YAML config file (default: the packaged configs/quickstart.yaml)",
  )
  p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
  p.add_argument("--runtime", default="onnxruntime", help="runtime to time on: onnxruntime")
  p.add_argument("--out", type=Path, required=True, help="the CSV to write (its folder must exist)")
  p.add_argument("--repeats", type=int, default=50, help="timed runs per layer (median taken)")
  p.add_argument("--warmup", type=int, default=10, help="untimed runs before timing")
  p.set_defaults(func=run_profile)


def run_profile(args) -> int:
  from qdarts.config import load_config  # noqa: PLC0415

  if args.runtime != "onnxruntime":
    raise ConfigError(f"--runtime: unknown runtime {args.runtime!r}; expected onnxruntime")
  if not args.out.parent.is_dir():
    raise ConfigError(f"--out {args.out}: folder {args.out.parent} does not exist")
  if args.out.is_dir():
    raise ConfigError(f"--out {args.out}: is a folder; give a CSV file path")
  if args.repeats < 1 or args.warmup < 0:
    raise ConfigError(
      f"--repeats {args.repeats} / --warmup {args.warmup}: expected repeats >= 1, warmup >= 0"
    )
  path, overrides = _config_path(args.config, args.overrides)
  cfg = load_config(path, overrides)
  from qdarts.profile import profile_config  # noqa: PLC0415 (imports jax, onnx)

  measured = profile_config(cfg, args.out, repeats=args.repeats, warmup=args.warmup)
  total = sum(ms for _, ms in measured)
  print(f"{args.out}: {len(measured)} rows, {total:.4g} ms summed ({cfg.name}, {args.runtime})")
  return 0


def add_import_table_parser(subparsers) -> None:
  from hwcost.importers import IMPORT_FORMATS  # noqa: PLC0415 (numpy only)

  p = subparsers.add_parser(
    "import-table",
    help="turn a public per-layer cost table into a measured-rows CSV",
    description="Reads a published latency/energy lookup table, checks every key, converts "
    "its units to ms and µJ, and writes the CSV that a target's `measured: {file: ...}` reads. "
    "apq-bitfusion (alias haq-bitfusion): the BitFusion table of mit-han-lab/apq, "
    "lut/BitFusion_new.b1.dict (JSON).",
    epilog="example: qdarts import-table --format haq-bitfusion BitFusion_new.b1.dict "
    "--out bitfusion_rows.csv",
  )
  p.add_argument("table", type=Path, help="the public table file")
  p.add_argument("--format", required=True, choices=sorted(IMPORT_FORMATS), help="its format")
  p.add_argument("--out", type=Path, required=True, help="the CSV to write (its folder must exist)")
  p.set_defaults(func=run_import_table)


def run_import_table(args) -> int:
  from hwcost.importers import import_table, measured_rows_csv  # noqa: PLC0415
  from qdarts.run_dir import atomic_write_text  # noqa: PLC0415

  if not args.out.parent.is_dir():
    raise ConfigError(f"--out {args.out}: folder {args.out.parent} does not exist")
  if args.out.is_dir():
    raise ConfigError(f"--out {args.out}: is a folder; give a CSV file path")
  table = import_table(args.table, args.format)
  atomic_write_text(args.out, measured_rows_csv(table))
  skipped = f"; skipped {', '.join(table.skipped)} (no shape)" if table.skipped else ""
  print(f"{args.out}: {len(table.rows)} rows from {args.table} ({args.format}{skipped})")
  return 0


def add_export_parser(subparsers) -> None:
  p = subparsers.add_parser(
    "export",
    help="write a run's SubNet as ONNX, TFLite and/or C, each checked against the integer model",
    description="Rebuilds the deployable models of a run folder from its subnet.npz, runs each "
    "in its runtime on test inputs and compares it with the integer reference; records sizes, "
    "SHA-256 and the agreement in result.json.",
  )
  p.add_argument("run", type=Path, help="a run folder of `qdarts search`")
  p.add_argument("--format", default="all", help="onnx, tflite, c, a comma list, or all")
  p.add_argument("--data-dir", default=None, help="where the dataset files are")
  p.add_argument(
    "--tflite-filters",
    default=None,
    help="int8 (every filter; XNNPACK, LiteRT's default runtime, runs every conv) or int4 "
    "(filters of <= 4 bits: half their bytes, run on LiteRT's builtin kernels); default: the "
    "run's export.tflite_filters, int8 if it has none",
  )
  p.set_defaults(func=run_export)


def _run_tflite_filters(run: Path) -> str:
  """``export.tflite_filters`` of the run's config.yaml; the default where it has none."""
  from qdarts.config import ExportConfig, load_config  # noqa: PLC0415

  path = run / "config.yaml"
  return load_config(path).export.tflite_filters if path.is_file() else ExportConfig.tflite_filters


def run_export(args) -> int:
  from qdarts.export.formats import check_tflite_filters, export_run, parse_formats  # noqa: PLC0415

  filters = args.tflite_filters or _run_tflite_filters(args.run)
  formats = parse_formats(args.format)
  results = export_run(args.run, formats, args.data_dir, check_tflite_filters(filters))
  for fmt, r in results.items():
    if not r["verified"]:
      print(f"{fmt}: {args.run / r['path']} (not verified: {r['why']})")
      continue
    exact = "" if "bit_exact" not in r else f", bit-exact: {r['bit_exact']}"
    if "xnnpack_prediction_agreement" in r:
      exact += (
        f"; {r['filters'].upper()} filters, XNNPACK (LiteRT's default) agrees with single "
        f"rounding on {r['xnnpack_prediction_agreement']:.2%}, max logit gap "
        f"{r['xnnpack_max_logit_diff_lsb']:.1f} LSB"
      )
      if "xnnpack_max_code_diff" in r:
        exact += f", every tensor within {r['xnnpack_max_code_diff']} codes"
    print(
      f"{fmt}: {args.run / r['path']} — agrees with the integer model on "
      f"{r['prediction_agreement']:.2%} of {r['samples']} test inputs, max logit gap "
      f"{r['max_logit_diff_lsb']:.1f} LSB{exact}"
    )
  return 0


def add_eval_parser(subparsers) -> None:
  p = subparsers.add_parser(
    "eval",
    help="accuracy and latency of an exported model in its runtime",
    description="Runs an exported model (.onnx in ONNX Runtime, .tflite in LiteRT, or a C "
    "export folder built with the system C compiler) on the test split of the dataset recorded "
    "in its metadata and prints its accuracy and median latency per sample.",
  )
  p.add_argument("model", type=Path, help="runs/NAME/model.onnx, model.tflite or c/")
  p.add_argument("--dataset", default=None, help="another dataset (default: the model's)")
  p.add_argument("--data-dir", default=None, help="where the dataset files are")
  p.add_argument("--json", action="store_true", help="print the result as one JSON line")
  p.set_defaults(func=run_eval)


def run_eval(args) -> int:
  from qdarts.evaluate import evaluate  # noqa: PLC0415

  result = evaluate(args.model, dataset=args.dataset, data_dir=args.data_dir)
  if args.json:
    print(json.dumps(result))
    return 0
  print(f"model: {result['model']} ({result['runtime']})")
  print(f"dataset: {result['dataset']} ({result['samples']} test samples)")
  print(f"accuracy: {result['accuracy']:.4f}")
  print(f"latency: {result['latency_ms_median']:.3f} ms per sample (median, batch 1)")
  return 0


def add_report_parser(subparsers) -> None:
  p = subparsers.add_parser(
    "report",
    help="redraw a run's plots and rewrite report.md and report.html",
    description="Rewrites plots/*.png, report.md and the self-contained report.html of a "
    "finished run from its result.json, subnet.json and probs_history.npz (no JAX, no data).",
  )
  p.add_argument("run", type=Path, help="a run folder of `qdarts search`")
  p.set_defaults(func=run_report)


def run_report(args) -> int:
  from qdarts.report import regenerate_report  # noqa: PLC0415 (matplotlib)

  for path in regenerate_report(args.run):
    print(path)
  return 0


def add_inspect_parser(subparsers) -> None:
  p = subparsers.add_parser(
    "inspect",
    help="print a run's SubNet, its costs and accuracies, and where each artifact is",
    description="Prints the derived SubNet of a finished run (op, bits, P(op), cost per "
    "choice point), its exact costs, budgets, accuracies and the path of every artifact.",
  )
  p.add_argument("run", type=Path, help="a run folder of `qdarts search`")
  p.add_argument("--json", action="store_true", help="print the same as one JSON document")
  p.set_defaults(func=run_inspect)


def run_inspect(args) -> int:
  from qdarts.inspect_run import describe_run, format_run  # noqa: PLC0415

  desc = describe_run(args.run)
  print(json.dumps(desc, indent=2) if args.json else format_run(desc))
  return 0


def add_sweep_parser(subparsers) -> None:
  p = subparsers.add_parser(
    "sweep",
    help="one search per value of a config key, and the Pareto front of accuracy against cost",
    description="Runs the whole pipeline once per value of each --over key (several --over: "
    "every combination), one run folder each under the sweep folder, then writes sweep.json, "
    "pareto.png (test accuracy against the exact cost of each derived SubNet) and "
    "sweep.md/sweep.html. Runs go one after another; with several devices each uses all.",
    epilog="example: qdarts sweep configs/quickstart.yaml --over cost.weight=0,0.1,0.3,1",
  )
  p.add_argument(
    "config",
    nargs="?",
    default=None,
    help="YAML config file (default: the packaged configs/quickstart.yaml)",
  )
  p.add_argument(
    "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides common to every run"
  )
  p.add_argument(
    "--over",
    action="append",
    required=True,
    metavar="KEY=V1,V2,...",
    help="a config key and its values, e.g. cost.weight=0,0.1,0.3,1 or "
    "cost.target=bops,bitfusion45 (commas inside [...] belong to one value)",
  )
  p.add_argument(
    "--out",
    type=Path,
    default=None,
    help="sweep folder (default: runs/<config-name>-sweep-<timestamp>/)",
  )
  p.add_argument("--data-dir", default=None, help="folder holding the dataset files")
  p.add_argument("--no-cache", action="store_true", help="do not use the compilation cache")
  p.set_defaults(func=run_sweep_command)


def run_sweep_command(args) -> int:
  from qdarts.progress import RichReporter  # noqa: PLC0415
  from qdarts.run_dir import new_run_dir  # noqa: PLC0415
  from qdarts.sweep import parse_over, plan_sweep, run_sweep  # noqa: PLC0415 (imports jax)

  axes = [parse_over(text) for text in args.over]
  path, overrides = _config_path(args.config, args.overrides)
  if args.data_dir is not None:
    overrides = [*overrides, f"data.data_dir={args.data_dir}"]
  points = plan_sweep(path, overrides, axes)  # every point validated before any write
  if args.out is not None and args.out.exists() and any(args.out.iterdir()):
    raise ConfigError(f"--out {args.out}: folder exists and is not empty; choose a new one")
  if not args.no_cache:
    _enable_compilation_cache()
  sweep_dir = new_run_dir(args.out, f"{points[0].cfg.name}-sweep")
  reporter = RichReporter()
  reporter.console.print(f"[bold]qdarts sweep[/] {path}: {len(points)} runs in {sweep_dir}")
  with reporter:
    doc = run_sweep(points, sweep_dir, reporter)
  for i, r in enumerate(doc["runs"]):
    front = " (Pareto)" if i in doc["pareto"] else ""
    print(
      f"{r['label']}: {doc['metric']} {r['costs'].get(doc['metric'], float('nan')):.6g}, "
      f"accuracy {r['accuracy']:.4f}{front}  [{r['run']}]"
    )
  print(f"sweep folder: {sweep_dir} (sweep.html, pareto.png, sweep.json)")
  return 0


def main(argv: list[str] | None = None) -> int:
  parser = _Parser(
    prog="qdarts",
    allow_abbrev=False,
    description="Differentiable quantization-aware architecture search "
    "(∇QDARTS) for tinyML hardware, from config to deployable int8/int4 model.",
  )
  parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
  add_search_parser(sub)
  add_train_parser(sub)
  add_cost_parser(sub)
  add_profile_parser(sub)
  add_targets_parser(sub)
  add_validate_target_parser(sub)
  add_import_table_parser(sub)
  add_export_parser(sub)
  add_eval_parser(sub)
  add_report_parser(sub)
  add_inspect_parser(sub)
  add_sweep_parser(sub)
  args = parser.parse_args(argv)
  if args.command is None:
    parser.print_help()
    return 2
  from hwcost import CostTableError  # noqa: PLC0415 (numpy only)

  try:
    return args.func(args)
  except SearchInterrupted as e:
    print(f"qdarts: {e}", file=sys.stderr)
    return 130
  except (QdartsError, CostTableError) as e:
    if args.debug:
      raise
    print(f"qdarts: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("qdarts: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
