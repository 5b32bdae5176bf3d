"""Search quality: does the joint search of ops and bits beat what a user would do without it?

On Fashion-MNIST, for two targets (BOPs, and the latency of a GAP8 cluster running PULP-NN)
at three cost budgets (fractions of the costliest SubNet's cost), over several seeds:

1. ``joint``: qdarts' joint search of ops and bits within the budget;
2. ``fp_w8a8`` / ``fp_w4a4``: the same space searched at 8 bits only (the full-precision
   proxy: bits are limited to 2..8, and 8-bit QAT is within noise of float on this task) within
   the budget, its derived network then trained with uniform 8-bit and uniform 4-bit QAT;
3. ``fp_bits``: that network fixed, a bits-only (mixed-precision) search within the budget;
4. ``random``: N SubNets drawn uniformly within the budget (ops and bits), each trained on the
   weight half for the search's epochs and scored on the other half (validation); the best wins.

Each method yields one SubNet, and every SubNet is then trained **from scratch with one final
schedule** (``train.epochs`` epochs of QAT on the whole training split, the same seed), the
evaluation protocol of DARTS: the table compares the architectures and bits the methods choose,
not how their weights were obtained. Accuracy is the exported integer model's in ONNX Runtime
on the test split. The searches also record what ``qdarts search`` itself delivered (the SubNet
with the supernet's weights, fine-tuned for the same epochs) as ``pipeline_accuracy``.
Writes ``results.json``, ``results.md`` and ``pareto.png`` in ``--out``; every unit keeps its
own ``runs/<unit>/result.json`` there, so a rerun with the same ``--out`` skips what is done
(an interrupted benchmark continues).

    python bench/quality.py --preset cpu --out bench-quality      # 43 min: 2 --shard runs, 2 cores
    python bench/quality.py --preset gpu --out bench-quality-gpu   # bench/gpu_quality.sh
"""

import argparse
import dataclasses
import itertools
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality_report as report  # noqa: E402
import quality_runs as runs  # noqa: E402

# A few hundred steps: at the quickstart's fine-tune rate (1e-3) these networks stay near chance
# (loss 2.2 after 100 steps); 3e-3 fine-tunes. search.weight_lr stays 3e-3: at 1e-2 the
# supernet did not train at all (loss 2.30 through 4 epochs), while fixed SubNets did.
FAST_LR = ("train.lr=0.003",)
# A short search (a few dozen arch steps) needs a larger arch step than the paper's 3e-3 over
# thousands of steps: Adam moves a logit by about lr per step, so at 3e-3 the op and bit
# distributions stayed within a few percent of uniform and the derived SubNet was decided by
# the cost gradient alone (the README's search-quality section has the measurements).
SHORT_SEARCH = ("search.arch_lr=0.03",)
RANDOM_DRAWS = 20000  # uniform draws random search filters by the budget (cheap: exact cost only)
TARGETS = {"bops": "bops", "gap8_pulpnn": "latency_ms"}  # target → the metric of its budget
# No depthwise-separable candidate right after the 8-channel stem: measured here, a SubNet
# with dwsep3x3 at layer0 does not train at all (loss stays at ln 10 = 2.303 through search
# and fine-tuning, at 8 bits too), while the same op at layers 1-3 trains (report of issue 7).
FULL_SPACE = runs.SpaceSpec(
  stem={"channels": 8, "kernel": 3, "stride": 2},
  layers=(
    {"channels": 16, "stride": 1, "candidates": ["conv3x3", "conv5x5"]},
    {"channels": 16, "stride": 1, "candidates": ["conv3x3", "conv5x5", "dwsep3x3", "skip"]},
    {"channels": 32, "stride": 2, "candidates": ["conv3x3", "conv5x5", "dwsep3x3", "dwsep5x5"]},
    {"channels": 32, "stride": 1, "candidates": ["conv3x3", "conv5x5", "dwsep3x3", "skip"]},
  ),
)


@dataclass(frozen=True)
class Preset:
  """One benchmark size.

  Attributes:
    schedule: data and epochs shared by every method.
    space: the joint search space (a chain: every SubNet exports to ONNX).
    bits: candidate weight and activation bit-widths of the joint and bits-only searches.
    targets: target names (keys of TARGETS).
    fractions: per target, the budgets as fractions of the costliest SubNet's cost.
    seeds: every method runs at every seed.
    random_n: SubNets random search draws within each budget.
  """

  schedule: runs.Schedule
  space: runs.SpaceSpec
  bits: tuple[int, ...]
  targets: tuple[str, ...]
  fractions: dict = field(default_factory=dict)
  seeds: tuple[int, ...] = (0, 1, 2)
  random_n: int = 4


CPU_PRESET = Preset(
  schedule=runs.Schedule(
    dataset="fashion_mnist",
    data_dir=None,
    subset=4096,
    test_subset=2000,
    batch_size=64,
    search_epochs=4,
    warmup_epochs=2,
    train_epochs=8,
    search_overrides=FAST_LR + SHORT_SEARCH,
  ),
  space=FULL_SPACE,
  bits=(2, 4, 8),
  targets=("bops", "gap8_pulpnn"),
  fractions={"bops": (0.03, 0.06, 0.12), "gap8_pulpnn": (0.2, 0.3, 0.45)},
  random_n=4,
)

PRESETS = {
  "cpu": CPU_PRESET,
  # the cpu preset's space, targets and budgets on the whole of Fashion-MNIST, longer
  "gpu": dataclasses.replace(
    CPU_PRESET,
    schedule=dataclasses.replace(
      CPU_PRESET.schedule,
      subset=None,
      test_subset=None,
      batch_size=128,
      search_epochs=8,
      warmup_epochs=4,
      train_epochs=10,
    ),
    random_n=6,
  ),
  # the benchmark's machinery in seconds (tests): 8×8 digits, two layers, one budget
  "test": Preset(
    schedule=runs.Schedule(
      dataset="digits",
      data_dir=None,
      subset=None,
      test_subset=None,
      batch_size=64,
      search_epochs=2,
      warmup_epochs=1,
      train_epochs=1,
    ),
    space=runs.SpaceSpec(
      stem={"channels": 4, "kernel": 3, "stride": 1},
      layers=(
        {"channels": 8, "stride": 2, "candidates": ["conv3x3", "dwsep3x3"]},
        {"channels": 8, "stride": 1, "candidates": ["conv3x3", "dwsep3x3", "skip"]},
      ),
    ),
    bits=(2, 4, 8),
    targets=("bops",),
    fractions={"bops": (0.3,)},
    seeds=(0,),
    random_n=2,
  ),
}


class BenchError(Exception):
  """Bad input: one line, exit code 2."""


def log(msg: str) -> None:
  print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class Bench:
  """State of one benchmark run: the preset, the output folder, loaded data per seed."""

  preset: Preset
  out: Path
  preset_name: str = ""
  report_only: bool = False  # collect finished units, run nothing
  missing: int = 0
  data: dict = field(default_factory=dict)
  setups: dict = field(default_factory=dict)
  done: int = 0
  skipped: int = 0

  @property
  def schedule(self) -> runs.Schedule:
    return self.preset.schedule

  def space_file(self, name: str, ops: list[str] | None = None) -> Path:
    path = self.out / "spaces" / f"{name}.yaml"
    if not path.exists():
      runs.write_space(path, self.preset.space.document(name, ops))
    return path

  def config(self, space_file: Path, seed: int, target: str, bits, budget):
    return runs.search_config(
      space_file, self.schedule, seed, target, TARGETS[target], tuple(bits), budget
    )

  def dataset(self, seed: int):
    """The seed's data split, loaded once (every unit of that seed shares it)."""
    if seed not in self.data:
      from qdarts.data import load_dataset  # noqa: PLC0415

      cfg = self.config(self.space_file("joint"), seed, self.preset.targets[0], (8,), None)
      self.data = {seed: load_dataset(cfg.data, seed)}  # one split in memory at a time
    return self.data[seed]

  def setup(self, seed: int, target: str):
    """The joint space prepared for ``target`` (cost tables, masks, costliest SubNet)."""
    key = (seed, target)
    if key not in self.setups:
      from qdarts import pipeline  # noqa: PLC0415

      cfg = self.config(self.space_file("joint"), seed, target, self.preset.bits, None)
      self.setups = {k: v for k, v in self.setups.items() if k[0] == seed}
      self.setups[key] = pipeline.prepare(cfg, self.dataset(seed))
    return self.setups[key]

  def unit(self, name: str, make) -> dict | None:
    """``runs/<name>/result.json``, computed by ``make(run_dir)`` unless already there.

    A unit runs in ``runs/.partial/<name>.<pid>`` and is renamed into place when done, so an
    interrupted unit leaves no ``runs/<name>``, and two shards (processes) computing the same
    unit both finish (the first rename wins). ``report_only``: None instead of running it.
    """
    run_dir = self.out / "runs" / name
    result = runs.load_result(run_dir)
    if result is not None:
      self.skipped += 1
      return result
    if self.report_only:
      self.missing += 1
      return None
    t0 = time.perf_counter()
    partial = self.out / "runs" / ".partial" / f"{name}.{os.getpid()}"
    result = make(partial)
    if run_dir.exists() and runs.load_result(run_dir) is None:
      shutil.rmtree(run_dir)  # left by an interrupted run of an older version of this bench
    try:
      partial.rename(run_dir)
    except OSError:  # another shard finished it first: keep theirs
      shutil.rmtree(partial, ignore_errors=True)
      result = runs.load_result(run_dir)
    self.done += 1
    if "accuracy" in result:
      acc = result["accuracy"].get("onnx_runtime", result["accuracy"]["fake_quant"])
      score = f"test accuracy {acc:.4f}"
    else:
      score = f"validation accuracy {result['val_accuracy']:.4f}"
    log(f"  {name}: {time.perf_counter() - t0:.1f} s, {score}")
    return result


def record(method, target, fraction, budget, seed, result, cost, search_s, **extra) -> dict:
  """One row of results.json."""
  acc = result["accuracy"]
  kind = "onnx_runtime" if "onnx_runtime" in acc else "fake_quant"
  return {
    "method": method,
    "target": target,
    "metric": TARGETS[target],
    "fraction": fraction,
    "budget": budget,
    "seed": seed,
    "accuracy": acc[kind],
    "accuracy_kind": kind,
    "fake_quant_accuracy": acc["fake_quant"],
    "cost": cost,
    "search_s": search_s,
    "subnet": [(c["op"], c["w_bits"], c["a_bits"]) for c in result["subnet"]],
    **extra,
  }


def run_cell(bench: Bench, target: str, fraction: float, seed: int) -> list[dict]:
  """Every method at one target, budget and seed; returns their records (with
  ``report_only``, those of the methods whose units are all finished)."""
  from qdarts.targets import memory_budgets  # noqa: PLC0415
  from search_spaces import Choice  # noqa: PLC0415

  metric = TARGETS[target]
  setup = bench.setup(seed, target)
  data = bench.dataset(seed)
  reference = float(setup.objective.reference[0])
  budget = fraction * reference
  tag = f"{target}-{fraction:g}-s{seed}"
  log(f"{target} budget {fraction:.0%} of {reference:.4g} {metric} = {budget:.4g}, seed {seed}")

  def search(name, space_file, bits):
    cfg = bench.config(space_file, seed, target, bits, budget)
    return bench.unit(name, lambda d: runs.run_search_unit(cfg, data, d))

  def fixed(choices, screen_only=False):
    name = f"{'screen' if screen_only else 'fixed'}-s{seed}-{runs.choices_key(choices)}"
    return bench.unit(name, lambda d: runs.run_fixed_unit(setup, choices, seed, d, screen_only))

  def add(method, result, cost, search_s, **extra):
    records.append(record(method, target, fraction, budget, seed, result, cost, search_s, **extra))

  def searched(method, result, search_s):
    """A search's SubNet, retrained from scratch with the final schedule like every other."""
    choices = runs.choices_of(result)
    if final := fixed(choices):
      acc = result["accuracy"].get("onnx_runtime", result["accuracy"]["fake_quant"])
      cost = runs.exact_costs(setup, choices)[metric]
      add(method, final, cost, search_s, pipeline_accuracy=acc)

  records = []
  if joint := search(f"joint-{tag}", bench.space_file("joint"), bench.preset.bits):
    searched("joint", joint, joint["timings_s"]["search_s"])

  fp = search(f"fp8-{tag}", bench.space_file("joint"), (8,))
  if fp:
    fp_ops = [r["op"] for r in fp["subnet"]]
    fp_search_s = fp["timings_s"]["search_s"]
    for bits, method in ((8, "fp_w8a8"), (4, "fp_w4a4")):
      choices = [Choice(op, bits, bits) for op in fp_ops]
      if result := fixed(choices):
        add(method, result, runs.exact_costs(setup, choices)[metric], fp_search_s)
    fixed_space = bench.space_file("fixed-" + "-".join(fp_ops), fp_ops)
    if bits_only := search(f"fpbits-{tag}", fixed_space, bench.preset.bits):
      searched("fp_bits", bits_only, fp_search_s + bits_only["timings_s"]["search_s"])

  # random search: the first N uniform draws (fixed stream per seed) that meet the budget
  # and the target's memory sizes; screened on the validation half, the best trained fully
  limits = {**memory_budgets(setup.cost_model), metric: budget}
  stream = runs.sample_subnets(setup, seed, RANDOM_DRAWS)
  fitting = (c for c in stream if runs.within(runs.exact_costs(setup, c), limits))
  drawn = list(itertools.islice(fitting, bench.preset.random_n))
  if not drawn:
    log(f"  random: none of {RANDOM_DRAWS} draws meets the budget {budget:.4g} {metric}")
    return records
  screened = [fixed(c, screen_only=True) for c in drawn]
  if all(screened):
    best = max(range(len(drawn)), key=lambda i: screened[i]["val_accuracy"])
    if winner := fixed(drawn[best]):
      cost = runs.exact_costs(setup, drawn[best])[metric]
      search_s = sum(s["timings_s"]["screen_s"] for s in screened)
      add("random", winner, cost, search_s, random_n=len(drawn))
  return records


def write_outputs(bench: Bench, records: list[dict], wall_s: float) -> None:
  from qdarts.run_dir import atomic_write_json, atomic_write_text  # noqa: PLC0415

  rows = report.summarise(records)
  verdicts = report.front_verdicts(rows)
  s = bench.schedule
  machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}"
  try:
    import jax  # noqa: PLC0415

    devices = ", ".join(str(d) for d in jax.devices())
  except Exception:  # noqa: BLE001 (a machine description is best effort)
    devices = "unknown"
  header = (
    f"## Search quality ({bench.preset_name} preset)\n\n"
    f"{s.dataset}, training subset {s.subset or 'all'}, test subset {s.test_subset or 'all'}, "
    f"batch {s.batch_size}; search {s.search_epochs} epochs ({s.warmup_epochs} warm-up), "
    f"fine-tune {s.train_epochs} epochs; seeds {list(bench.preset.seeds)}; "
    f"bits {list(bench.preset.bits)}. Machine: {machine}; devices: {devices}. "
    f"Wall time of this invocation: {wall_s / 60:.1f} min."
  )
  atomic_write_json(
    bench.out / "results.json",
    {
      "preset": bench.preset_name,
      "schedule": dataclasses.asdict(s),
      "space": dataclasses.asdict(bench.preset.space),
      "bits": list(bench.preset.bits),
      "seeds": list(bench.preset.seeds),
      "random_n": bench.preset.random_n,
      "machine": machine,
      "devices": devices,
      "wall_s": wall_s,
      "records": records,
      "summary": rows,
      "front": verdicts,
    },
  )
  atomic_write_text(bench.out / "results.md", report.markdown(rows, verdicts, header))
  report.pareto_plot(records, bench.out / "pareto.png")


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
  parser.add_argument("--out", required=True, help="output folder (reused: finished units skip)")
  parser.add_argument("--data-dir", help="dataset folder (default: $QDARTS_DATA_DIR, ...)")
  parser.add_argument("--seeds", help="comma-separated seeds instead of the preset's")
  parser.add_argument(
    "--shard",
    help="I/K: run only the I-th of K shards of the (seed, target) groups, write no table "
    "(parallel processes on one machine; then --report-only)",
  )
  parser.add_argument(
    "--report-only", action="store_true", help="write the table from finished units only"
  )
  parser.add_argument(
    "--cache-dir",
    default=default_cache_dir(),
    help="persistent XLA compilation cache",
  )
  return parser.parse_args(argv)


def resolve_preset(args) -> Preset:
  preset = PRESETS[args.preset]
  if args.data_dir:
    if not Path(args.data_dir).is_dir():
      raise BenchError(f"--data-dir: {args.data_dir} is not a folder")
    preset = dataclasses.replace(
      preset, schedule=dataclasses.replace(preset.schedule, data_dir=args.data_dir)
    )
  if args.seeds:
    try:
      seeds = tuple(int(s) for s in args.seeds.split(","))
    except ValueError:
      raise BenchError(f"--seeds: expected comma-separated integers, got {args.seeds!r}") from None
    preset = dataclasses.replace(preset, seeds=seeds)
  return preset


def check_fingerprint(out: Path, preset: Preset) -> None:
  """Finished units are reused by name, so ``out`` must hold units of this very preset:
  writes ``out/preset.json`` on first use; raises BenchError if it differs."""
  doc = json.loads(json.dumps(dataclasses.asdict(preset)))  # tuples → lists, as on disk
  doc.pop("seeds")  # more seeds reuse the finished ones
  doc["schedule"].pop("data_dir")  # where the same files are read from
  path = out / "preset.json"
  if path.exists():
    if json.loads(path.read_text()) != doc:
      raise BenchError(
        f"--out: {out} holds units of another preset or schedule ({path}); use a new folder"
      )
    return
  path.write_text(json.dumps(doc, indent=1))


def default_cache_dir() -> str:
  return os.environ.get("QDARTS_CACHE_DIR") or str(Path.home() / ".cache/qdarts/jax")


def use_compilation_cache(cache_dir: str) -> None:
  """Every XLA program goes to the persistent cache (the benchmark is compile-bound)."""
  import jax  # noqa: PLC0415

  jax.config.update("jax_compilation_cache_dir", cache_dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def parse_shard(text: str | None) -> tuple[int, int]:
  """``"I/K"`` → ``(I, K)`` with 0 ≤ I < K; None → ``(0, 1)``."""
  if text is None:
    return 0, 1
  try:
    i, k = (int(v) for v in text.split("/"))
  except ValueError:
    raise BenchError(f"--shard: expected I/K (e.g. 0/3), got {text!r}") from None
  if not 0 <= i < k:
    raise BenchError(f"--shard: expected 0 <= I < K, got {text!r}")
  return i, k


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    preset = resolve_preset(args)
    shard, shards = parse_shard(args.shard)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
      raise BenchError(f"--out: {out} exists and is not a folder")
  except BenchError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  use_compilation_cache(args.cache_dir)
  from qdarts.errors import QdartsError  # noqa: PLC0415

  out.mkdir(parents=True, exist_ok=True)
  try:
    check_fingerprint(out, preset)
  except BenchError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  bench = Bench(preset, out, preset_name=args.preset, report_only=args.report_only)
  t0, records = time.perf_counter(), []
  groups = [(s, t) for s in preset.seeds for t in preset.targets]  # one data split, one setup
  mine = [g for i, g in enumerate(groups) if i % shards == shard]
  cells = [(t, f, s) for s, t in mine for f in preset.fractions[t]]
  try:
    for k, (target, fraction, seed) in enumerate(cells):
      log(f"cell {k + 1}/{len(cells)}")
      records += run_cell(bench, target, fraction, seed)
  except QdartsError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  wall = time.perf_counter() - t0
  units = f"{bench.done} units run, {bench.skipped} already done, {bench.missing} missing"
  if shards > 1:
    log(f"shard {shard}/{shards} done in {wall / 60:.1f} min ({units})")
    return 0
  if not records:
    print(f"error: --out: no finished unit in {out}", file=sys.stderr)
    return 2
  write_outputs(bench, records, wall)
  log(f"done in {wall / 60:.1f} min ({units}): {out / 'results.md'}")
  print((out / "results.md").read_text())
  return 0


if __name__ == "__main__":
  sys.exit(main())
