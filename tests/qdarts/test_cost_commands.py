"""`qdarts targets`, `qdarts validate-target` and `qdarts cost`, run in-process."""

import json
from importlib import resources

import pytest

from qdarts.cli import main


def test_targets_lists_every_builtin(capsys):
  assert main(["targets"]) == 0
  out = capsys.readouterr().out
  for name in ("bops", "bitfusion45"):
    assert name in out


def test_validate_target_accepts_a_good_file(capsys):
  path = resources.files("qdarts.configs.targets") / "bitfusion45.yaml"
  assert main(["validate-target", str(path)]) == 0
  assert "ok: target 'bitfusion45'" in capsys.readouterr().out


def test_validate_target_names_the_field(tmp_path, capsys):
  good = (resources.files("qdarts.configs.targets") / "bitfusion45.yaml").read_text()
  bad = tmp_path / "slip.yaml"
  bad.write_text(good.replace("bandwidth_bytes_per_cycle: 24", "bandwidth_bytes_per_cycle: -24"))
  assert main(["validate-target", str(bad)]) == 2
  err = capsys.readouterr().err.strip()
  assert "slip.yaml" in err and "memory.bandwidth_bytes_per_cycle" in err
  assert len(err.splitlines()) == 1


@pytest.mark.parametrize("target", ["bops", "bitfusion45"])
def test_cost_prints_layers_and_totals_that_match_the_search(finished_run, capsys, target):
  run_dir, result = finished_run
  assert main(["cost", "--target", target, "--subnet", str(run_dir / "subnet.json")]) == 0
  out = capsys.readouterr().out
  assert "stem.conv3x3" in out and "head.fc" in out
  totals = {
    line.split()[1].rstrip(":"): float(line.split()[2])
    for line in out.splitlines()
    if line.startswith("total ")
  }
  assert "flash_bytes" in totals and "peak_act_bytes" in totals
  if target == "bops":  # the same target the search used: the same exact totals
    assert totals["bops"] == pytest.approx(result["cost"]["bops"], rel=1e-5)
    assert totals["flash_bytes"] == result["cost"]["flash_bytes"]
  else:
    assert totals["latency_ms"] > 0 and totals["energy_uj"] > 0


def test_cost_rejects_a_file_that_is_not_a_subnet(tmp_path, capsys):
  other = tmp_path / "result.json"
  other.write_text(json.dumps({"accuracy": 1}))
  assert main(["cost", "--target", "bops", "--subnet", str(other)]) == 2
  assert "not a qdarts SubNet file" in capsys.readouterr().err
  assert main(["cost", "--target", "bops", "--subnet", str(tmp_path / "none.json")]) == 2
  assert "SubNet file not found" in capsys.readouterr().err


def test_cost_rejects_a_broken_subnet_file(finished_run, tmp_path, capsys):
  run_dir, _ = finished_run
  doc = json.loads((run_dir / "subnet.json").read_text())
  for name, broken in (
    ("nolayers.json", {k: v for k, v in doc.items() if k != "layers"}),
    ("badop.json", {**doc, "layers": [{**doc["layers"][0], "op": "conv9x9"}, *doc["layers"][1:]]}),
  ):
    path = tmp_path / name
    path.write_text(json.dumps(broken))
    assert main(["cost", "--target", "bops", "--subnet", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert name in err and len(err.splitlines()) == 1, err
