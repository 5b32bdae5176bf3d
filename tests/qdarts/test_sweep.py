"""`qdarts sweep`: the grid of values, its validation, and a whole sweep of cost weights."""

import itertools
import json

import pytest

from qdarts.cli import main
from qdarts.errors import ConfigError
from qdarts.plots import pareto_figure
from qdarts.sweep import SweepAxis, parse_over, plan_sweep, split_values

# small enough to run four times in well under a minute; the cost pulls it visibly
SWEEP_OVERRIDES = [
  "data.dataset=synthetic",
  "data.batch_size=32",
  "space.stem_channels=4",
  "space.channels=[8,8,8]",
  "space.strides=[1,2,1]",
  "space.ops=[conv3x3,conv5x5,dwsep3x3,skip]",
  "search.epochs=6",
  "search.warmup_epochs=2",
  "search.arch_lr=0.01",
  "train.epochs=0",
  "export.formats=[onnx]",
]
WEIGHTS = ("0", "0.3", "1", "10")


def test_values_split_at_commas_outside_brackets():
  assert split_values("0, 0.1,[2,4],{a: 1, b: 2}") == ["0", "0.1", "[2,4]", "{a: 1, b: 2}"]
  assert parse_over("quant.w_bits=[2,4],[4,8]") == SweepAxis("quant.w_bits", ("[2,4]", "[4,8]"))


@pytest.mark.parametrize(
  ("text", "message"),
  [
    ("cost.weight", "expected KEY=V1,V2"),
    ("=1,2", "expected KEY=V1,V2"),
    ("cost.weight=0,,1", "an empty value"),
    ("cost.weight=1,1", "a value is repeated"),
    ("cost.weight=[1,", "cannot parse value"),
  ],
)
def test_bad_over_is_a_config_error(text, message):
  with pytest.raises(ConfigError, match=message):
    parse_over(text)


def test_axes_multiply_and_each_point_is_validated(quickstart_path):
  axes = [parse_over("cost.weight=0,1"), parse_over("quant.w_bits=[4,8],[2,8],[8]")]
  points = plan_sweep(quickstart_path, ["search.epochs=2", "search.warmup_epochs=1"], axes)
  assert len(points) == 6
  assert points[3].overrides == ("cost.weight=1", "quant.w_bits=[4,8]")
  assert points[3].cfg.quant.w_bits == (4, 8) and points[3].cfg.cost.weight == 1.0
  assert (
    points[3].folder == "03-weight-1_w_bits-_4_8" and points[3].label == "weight=1, w_bits=[4,8]"
  )
  with pytest.raises(ConfigError, match=r"sweep point cost.weight=-1: .*cost.weight: expected"):
    plan_sweep(quickstart_path, [], [parse_over("cost.weight=0,-1")])
  with pytest.raises(ConfigError, match="sweep point cost.target=tpu9000: .*unknown target"):
    plan_sweep(quickstart_path, [], [parse_over("cost.target=bops,tpu9000")])


def test_bad_sweep_is_one_line_and_writes_nothing(tmp_path, capsys):
  out = tmp_path / "sweep"
  assert main(["sweep", "--over", "cost.weight=0,abc", "--out", str(out), "--no-cache"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "sweep point cost.weight=abc" in err[0]
  assert not out.exists()


def test_sweep_of_cost_weights_orders_the_subnets_and_draws_the_front(
  quickstart_path, tmp_path, capsys
):
  out = tmp_path / "sweep"
  over = f"cost.weight={','.join(WEIGHTS)}"
  args = ["sweep", str(quickstart_path), *SWEEP_OVERRIDES, "--over", over, "--out", str(out)]
  assert main([*args, "--no-cache"]) == 0
  assert f"sweep folder: {out}" in capsys.readouterr().out
  doc = json.loads((out / "sweep.json").read_text())
  runs = doc["runs"]
  assert [r["overrides"] for r in runs] == [[f"cost.weight={w}"] for w in WEIGHTS]
  costs = [r["cost"] for r in runs]
  print("derived bops by cost weight", dict(zip(WEIGHTS, costs, strict=True)))
  assert all(a >= b for a, b in itertools.pairwise(costs)), costs
  assert costs[-1] < costs[0], costs
  for r in runs:
    assert (out / r["run"] / "report.html").is_file()
    assert (
      r["accuracy"]
      == json.loads((out / r["run"] / "result.json").read_text())["accuracy"]["onnx_runtime"]
    )
  assert runs[doc["pareto"][0]]["cost"] == min(costs)  # the front starts at the cheapest
  assert (out / "pareto.png").read_bytes().startswith(b"\x89PNG")
  assert "data:image/png;base64," in (out / "sweep.html").read_text()
  points = [{"label": r["label"], "cost": r["cost"], "accuracy": r["accuracy"]} for r in runs]
  fig = pareto_figure(points, doc["metric"], "onnx_runtime")
  assert len(fig.axes[0].collections[0].get_offsets()) == len(WEIGHTS)
