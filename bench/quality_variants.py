"""Search settings against search quality: the measurements behind the cpu preset's settings.

For a few (target, budget) cells of ``bench/quality.py``'s cpu preset at one seed, runs the
joint search under each named setting, retrains every derived SubNet from scratch with the
preset's final schedule, and prints one line per run: the SubNet, its exact cost as a fraction
of the budget, its test accuracy (ONNX Runtime) and the supernet's per-epoch training loss.
Units are cached in ``--out`` (``bench/quality.py``'s layout), so a rerun prints at once.

    python bench/quality_variants.py --out bench-variants \
        --cells bops:0.06,gap8_pulpnn:0.2,gap8_pulpnn:0.45
"""

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality  # noqa: E402
import quality_runs as runs  # noqa: E402

# overrides added to every search of the preset; "before" undoes the preset's adopted settings
VARIANTS = {
  "before": ("search.arch_lr=0.003", "search.warmup_epochs=1"),
  "lr3e-2": ("search.warmup_epochs=1",),
  "lr3e-2_w2": (),  # the cpu preset as adopted
  "lr1e-1": ("search.arch_lr=0.1", "search.warmup_epochs=1"),
  "lr3e-2_tau1": ("search.warmup_epochs=1", "search.tau_start=1.0", "search.tau_end=0.2"),
}


def parse_cell(text: str) -> tuple[str, float]:
  """``target:fraction`` (e.g. ``gap8_pulpnn:0.2``) of the cpu preset's targets."""
  target, _, fraction = text.partition(":")
  try:
    value = float(fraction)
  except ValueError:
    value = -1.0
  if target not in quality.TARGETS or not 0 < value <= 1:
    raise quality.BenchError(
      f"--cells: expected target:fraction with target in {', '.join(quality.TARGETS)} and "
      f"0 < fraction <= 1, got {text!r}"
    )
  return target, value


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, type=Path)
  parser.add_argument("--data-dir", default=None)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--cells", default="bops:0.06,gap8_pulpnn:0.2,gap8_pulpnn:0.45")
  parser.add_argument("--variants", default=",".join(VARIANTS))
  parser.add_argument("--cache-dir", default=quality.default_cache_dir())
  args = parser.parse_args(argv)
  try:
    cells = [parse_cell(text) for text in args.cells.split(",")]
    names = args.variants.split(",")
    if unknown := [n for n in names if n not in VARIANTS]:
      raise quality.BenchError(f"--variants: unknown {unknown}; known: {', '.join(VARIANTS)}")
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
      raise quality.BenchError(f"--data-dir: {args.data_dir} is not a folder")
  except quality.BenchError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  quality.use_compilation_cache(args.cache_dir)
  preset = quality.PRESETS["cpu"]
  schedule = dataclasses.replace(preset.schedule, data_dir=args.data_dir)
  preset = dataclasses.replace(preset, schedule=schedule, seeds=(args.seed,))
  bench = quality.Bench(preset, args.out, "cpu")
  for target, fraction in cells:
    setup = bench.setup(args.seed, target)
    metric = quality.TARGETS[target]
    budget = fraction * float(setup.objective.reference[0])
    for name in names:
      variant = dataclasses.replace(
        schedule, search_overrides=schedule.search_overrides + VARIANTS[name]
      )
      cfg = runs.search_config(
        bench.space_file("joint"), variant, args.seed, target, metric, preset.bits, budget
      )
      data = bench.dataset(args.seed)
      searched = bench.unit(
        f"joint-{name}-{target}-{fraction:g}-s{args.seed}",
        lambda d, cfg=cfg, data=data: runs.run_search_unit(cfg, data, d),
      )
      choices = runs.choices_of(searched)
      final = bench.unit(
        f"fixed-s{args.seed}-{runs.choices_key(choices)}",
        lambda d, c=choices, s=setup: runs.run_fixed_unit(s, c, args.seed, d),
      )
      cost = runs.exact_costs(setup, choices)[metric] / budget
      losses = [round(h["loss"], 2) for h in searched["search_history"]]
      print(
        f"{name:12s} {target} {fraction:.0%}: {runs.choices_key(choices)}"
        f"  cost {cost:.0%} of budget  test accuracy {final['accuracy']['onnx_runtime']:.4f}"
        f"  supernet loss {losses}",
        flush=True,
      )
  return 0


if __name__ == "__main__":
  sys.exit(main())
