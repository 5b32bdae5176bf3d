"""TensorBoard events of a run, read back with tensorboardX's protobufs, and the probability
history beside them."""

import json
import math
import struct
from collections import defaultdict

import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from qdarts.monitor import (
  PROBS_HISTORY,
  ProbsHistory,
  RunMonitor,
  bit_marginals,
  entropy,
  load_probs_history,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_events(folder) -> dict[str, list]:
  """``{tag: [(step, summary value)...]}`` of every event file directly in ``folder``."""
  values = defaultdict(list)
  for path in sorted(folder.glob("events.out.tfevents.*")):
    data, pos = path.read_bytes(), 0
    while pos < len(data):  # TFRecord: length u64, crc u32, payload, crc u32
      (length,) = struct.unpack("<Q", data[pos : pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
      for v in event.summary.value:
        values[v.tag].append((event.step, v))
      pos += 12 + length + 4
  return values


@pytest.fixture(scope="module")
def run_events(finished_run):
  run_dir, result = finished_run
  return read_events(run_dir / "events"), run_dir, result


def test_every_epoch_logs_losses_costs_temperature_and_entropies(run_events):
  events, _, result = run_events
  epochs = len(result["search_history"])
  metrics = ("bops", "flash_bytes", "peak_act_bytes")  # every metric of the bops target
  tags = [
    "search/loss",
    "search/acc",
    "search/tau",
    "entropy/op_mean",
    "entropy/w_bits_mean",
    "entropy/a_bits_mean",
    *(f"entropy/{k}/{c['choice']}" for k in ("op", "w_bits") for c in result["subnet"]),
    *(f"cost/{m}/{kind}" for m in metrics for kind in ("expected", "argmax")),
  ]
  for tag in tags:
    assert [step for step, _ in events[tag]] == list(range(1, epochs + 1)), tag
  for tag in ("search/arch_ce", "search/arch_acc"):  # architecture steps begin after warm-up
    assert [step for step, _ in events[tag]] == list(range(2, epochs + 1)), tag
  assert [s for s, _ in events["finetune/loss"]] == [1, 2]
  for tag in ("final/fake_quant", "final/onnx_runtime", "final/bops"):
    assert tag in events, tag


def test_logged_values_are_the_runs_numbers(run_events):
  events, _, result = run_events
  history = result["search_history"]
  argmax = [v.simple_value for _, v in events["cost/bops/argmax"]]
  np.testing.assert_allclose(argmax, [r["argmax_cost"] for r in history], rtol=1e-6)
  expected = [v.simple_value for _, v in events["cost/bops/expected"]]
  np.testing.assert_allclose(expected, [r["expected_cost"] for r in history], rtol=1e-5)
  taus = [v.simple_value for _, v in events["search/tau"]]
  np.testing.assert_allclose(taus, [r["tau"] for r in history], rtol=1e-6)
  (_, final), *_ = events["final/bops"]
  assert final.simple_value == pytest.approx(result["cost"]["bops"])
  for _, v in events["entropy/op/layer0"]:
    assert 0.0 <= v.simple_value <= math.log(3) + 1e-6  # three candidate ops


def test_logit_histograms_and_probability_heatmaps(run_events):
  events, _, result = run_events
  epochs = len(result["search_history"])
  for kind in ("op", "w_bits", "a_bits"):
    histos = events[f"logits/{kind}"]
    assert len(histos) == epochs
    assert all(v.histo.num > 0 and v.histo.min > -1e8 for _, v in histos), kind  # no masked
  images = events["probabilities/op_w_a"]
  assert [s for s, _ in images] == list(range(1, epochs + 1))
  assert all(v.image.encoded_image_string.startswith(PNG_MAGIC) for _, v in images)
  assert images[0][1].image.width > 300 and images[0][1].image.height > 100


def test_config_and_hparams_are_recorded(run_events):
  events, run_dir, result = run_events
  config_text = events["config/text_summary"][0][1].tensor.string_val[0].decode()
  assert "search:" in config_text and "epochs: 3" in config_text
  assert "layer0" in events["choices/text_summary"][0][1].tensor.string_val[0].decode()
  hparams = read_events(run_dir / "events" / "hparams")
  plugins = {v.metadata.plugin_data.plugin_name for vs in hparams.values() for _, v in vs}
  assert "hparams" in plugins
  (_, acc), *_ = hparams["hparam/fake_quant"]
  assert acc.simple_value == pytest.approx(result["accuracy"]["fake_quant"])
  session = [v for vs in hparams.values() for _, v in vs if v.tag == "_hparams_/session_start_info"]
  assert b"search.epochs" in session[0].metadata.plugin_data.content


def test_probability_history_ends_at_the_derived_probabilities(finished_run):
  run_dir, result = finished_run
  history = load_probs_history(run_dir / PROBS_HISTORY)
  assert history.epochs.tolist() == [r["epoch"] for r in result["search_history"]]
  np.testing.assert_allclose(history.op.sum(-1), 1.0, atol=1e-5)
  subnet = json.loads((run_dir / "subnet.json").read_text())
  for l, layer in enumerate(subnet["layers"]):
    final = [layer["op_probabilities"][op] for op in history.op_names]
    np.testing.assert_allclose(history.op[-1, l], final, atol=1e-6)
  w, a = history.bit_marginals()
  np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
  assert a.shape == (len(history.epochs), len(subnet["layers"]), len(history.a_bits))


def test_a_resumed_search_rewrites_the_epochs_it_runs_again():
  names = (("layer0",), ("conv", "skip"), (4, 8), (4, 8))
  history = ProbsHistory.empty(*names)
  probs = {"op": np.array([[0.5, 0.5]]), "w": np.full((1, 2, 2), 0.5), "a": np.full((1, 2, 2), 0.5)}
  for epoch in (1, 2, 3):
    history = history.with_epoch(epoch, probs)
  resumed = history.with_epoch(2, {**probs, "op": np.array([[0.9, 0.1]])})
  assert resumed.epochs.tolist() == [1, 2]
  np.testing.assert_allclose(resumed.op[:, 0, 0], [0.5, 0.9])


def test_a_monitor_continues_the_history_of_the_same_space_only(tmp_path):
  names = (("layer0",), ("conv", "skip"), (4, 8), (4, 8))
  probs = {"op": np.array([[0.5, 0.5]]), "w": np.full((1, 2, 2), 0.5), "a": np.full((1, 2, 2), 0.5)}
  ProbsHistory.empty(*names).with_epoch(1, probs).save(tmp_path / PROBS_HISTORY)
  resumed = RunMonitor(tmp_path, names)
  resumed.finish({})
  assert resumed.history.epochs.tolist() == [1]
  other = RunMonitor(tmp_path, (("layer0",), ("conv",), (8,), (8,)))
  other.finish({})
  assert other.history.epochs.size == 0


def test_entropy_and_bit_marginals():
  assert entropy(np.array([0.25] * 4)) == pytest.approx(math.log(4))
  assert entropy(np.array([1.0, 0.0, 0.0])) == 0.0
  op = np.array([[0.75, 0.25]])  # (L=1, O=2)
  bits = np.array([[[1.0, 0.0], [0.0, 1.0]]])  # op 0 at the first width, op 1 at the second
  np.testing.assert_allclose(bit_marginals(op, bits), [[0.75, 0.25]])


def test_budget_mode_logs_lambda(tmp_path, quickstart_path, tiny_overrides):
  """A budget term's λ (dual ascent) is logged per epoch as search/lambda_<metric>."""
  import jax

  from qdarts import pipeline
  from qdarts.config import load_config
  from qdarts.search import run_search
  from qdarts.supernet import split_supernet

  # every SubNet of the tiny space costs more than 1.5e5 BOPs (its stem alone 1.47e5)
  overrides = [*tiny_overrides, "search.epochs=2", "cost.form=budget", "cost.budget=150000"]
  setup = pipeline.prepare(load_config(quickstart_path, overrides))
  setup.supernet.net.calibrate(setup.data.to_input(setup.data.x_weight[:64]))
  graphdef, groups = split_supernet(setup.supernet)
  monitor = RunMonitor.for_setup(setup, tmp_path)

  def on_epoch(epoch, row, logits):
    monitor.log_epoch("search", epoch, row, logits)

  outcome = run_search(setup.cfg, setup.data, graphdef, groups, setup.objective, on_epoch)
  monitor.finish({"accuracy": {}, "cost": {}})
  lambdas = read_events(tmp_path / "events")["search/lambda_bops"]
  assert [s for s, _ in lambdas] == [2]  # arch steps (and λ) start after the warm-up epoch
  final_lambda = float(jax.device_get(outcome.objective.weight)[0])
  # the epoch's mean λ: it grew at every step, since no SubNet meets the budget
  assert 0 < lambdas[0][1].simple_value < final_lambda
