"""The whole pipeline on a tiny config: artifacts, their agreement, and the export bridge."""

import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from qdarts import pipeline
from qdarts.config import load_config
from qdarts.export import reference_forward
from qdarts.export.from_subnet import chain_from_subnet
from qdarts.finetune import predict_logits
from search_spaces import Choice, TinySpace


def test_run_folder_holds_every_artifact(finished_run):
  run_dir, result = finished_run
  names = ("config.yaml", "subnet.json", "subnet.npz", "model.onnx", "report.md", "result.json")
  names += ("report.html", "probs_history.npz")
  for name in names:
    assert (run_dir / name).stat().st_size > 0, name
  assert not list(run_dir.glob(".*.tmp"))  # atomic writes leave no temporaries
  on_disk = json.loads((run_dir / "result.json").read_text())
  assert on_disk["accuracy"] == result["accuracy"]
  listed = {a["path"]: a for a in on_disk["artifacts"]}
  assert listed["model.onnx"]["bytes"] == (run_dir / "model.onnx").stat().st_size
  assert len(listed["model.onnx"]["sha256"]) == 64
  assert {n for n in listed if not n.startswith(("c/", "plots/"))} == set(names) - {"result.json"}


def test_saved_subnet_rebuilds_the_exported_model(finished_run, tmp_path):
  from qdarts.export import export_onnx, run_onnx
  from qdarts.export.chain_file import load_chain

  run_dir, _ = finished_run
  chain = load_chain(run_dir / "subnet.npz")
  rebuilt = export_onnx(chain, tmp_path / "model.onnx")
  x = np.random.default_rng(0).uniform(0, 1, (16, *chain.input_shape)).astype(np.float32)
  np.testing.assert_array_equal(run_onnx(rebuilt, x), run_onnx(run_dir / "model.onnx", x))


def test_subnet_json_costs_add_up(finished_run):
  run_dir, result = finished_run
  subnet = json.loads((run_dir / "subnet.json").read_text())
  assert [layer["op"] for layer in subnet["layers"]] == [s["op"] for s in result["subnet"]]
  total = sum(layer["cost"]["bops"] for layer in subnet["layers"]) + sum(
    f["cost"]["bops"] for f in subnet["fixed_layers"]
  )
  assert total == subnet["total_cost"]["bops"] == result["cost"]["bops"]
  for layer in subnet["layers"]:
    if layer["op"] == "skip":  # nothing quantized, so no bits
      assert layer["w_bits"] is None and layer["a_bits"] is None and layer["cost"]["bops"] == 0
    else:
      assert layer["w_bits"] in (2, 4, 8) and layer["a_bits"] in (2, 4, 8)


def test_onnx_runtime_agrees_with_fake_quant(finished_run):
  _, result = finished_run
  acc = result["accuracy"]
  assert abs(acc["onnx_runtime"] - acc["fake_quant"]) <= 0.01
  assert acc["prediction_agreement"] >= 0.99


def test_report_names_the_subnet(finished_run):
  run_dir, result = finished_run
  text = (run_dir / "report.md").read_text()
  for layer in result["subnet"]:
    w, a = ("—" if b is None else b for b in (layer["w_bits"], layer["a_bits"]))
    assert f"| {layer['choice']} | {layer['op']} | {w} | {a} |" in text


def test_exported_chain_reproduces_the_fake_quant_subnet():
  """Bias on the int32 grid in QAT makes the JAX SubNet equal the integer model's semantics."""
  ops = ("conv3x3", "dwsep3x3", "skip")
  space = TinySpace((8, 8, 1), 5, 4, (4, 8, 8), (1, 2, 1), ops)
  choices = [Choice("conv3x3", 2, 4), Choice("dwsep3x3", 4, 2), Choice("skip", 8, 8)]
  subnet = space.build((2, 4, 8), (2, 4, 8), nnx.Rngs(0), choices)
  x = jax.random.uniform(jax.random.key(0), (32, 8, 8, 1))
  subnet.calibrate(x)
  rng = np.random.default_rng(0)
  for _, module in subnet.quantized_layers(ops):  # non-trivial biases
    if hasattr(module, "bias"):
      module.bias[...] = rng.normal(0, 0.3, module.bias[...].shape).astype(np.float32)
  chain = chain_from_subnet(subnet.quantized_layers(ops), (8, 8, 1), 5, {})
  jax_logits = predict_logits(subnet, x)
  ref = reference_forward(chain, np.asarray(x), int32_bias=True)
  np.testing.assert_allclose(jax_logits, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_analytic_target_fills_latency_tables(quickstart_path, tiny_overrides):
  cfg = load_config(
    quickstart_path, [*tiny_overrides, "cost.target=bitfusion45", "cost.metric=latency_ms"]
  )
  setup = pipeline.prepare(cfg)
  table = np.asarray(setup.objective.tables[0])  # (L, O, Bw, Ba)
  mask = setup.tables.op_mask
  assert setup.cost_model.name == "bitfusion45"
  conv3x3 = table[:, 0]  # every layer has a conv3x3: strictly positive latency at every pair
  assert (conv3x3 > 0).all()
  assert float(setup.objective.reference[0]) >= float(table[mask].max())
  # fewer bits never cost more on a bit-flexible accelerator
  assert (np.diff(conv3x3, axis=1) >= 0).all() and (np.diff(conv3x3, axis=2) >= 0).all()


def test_costs_say_where_they_come_from(finished_run, quickstart_path, tiny_overrides, tmp_path):
  _, result = finished_run
  assert result["cost_provenance"] == ["bops"]
  assert result["measured_latency_share"] is None  # bops has no latency
  from importlib import resources

  from qdarts.derive import subnet_costs

  # bitfusion45 plus one measured row: the stem (1→4, 3×3, 8×8) at w8a8
  text = (resources.files("qdarts.configs.targets") / "bitfusion45.yaml").read_text()
  (tmp_path / "rows.csv").write_text(
    "op,kernel,stride,groups,cin,cout,in_h,in_w,out_h,out_w,w_bits,a_bits,latency_ms,energy_uj\n"
    "conv,3,1,1,1,4,8,8,8,8,8,8,0.5,1.0\n"
  )
  (tmp_path / "t.yaml").write_text(text + "measured: {file: rows.csv}\n")
  cfg = load_config(quickstart_path, [*tiny_overrides, f"cost.target={tmp_path / 't.yaml'}"])
  setup = pipeline.prepare(cfg)
  choices = [Choice("skip", 8, 8), Choice("conv3x3", 4, 4)]  # skip fits layer0 only
  costs = subnet_costs(
    choices, setup.candidate_layers, setup.fixed_layers, setup.space.op_names, setup.cost_model
  )
  assert any(p.startswith("measured:exact") for p in costs["provenance"]), costs["provenance"]
  assert 0 < costs["measured_latency_share"] < 1


def test_search_verifies_every_format_against_the_integer_model(finished_run):
  import shutil

  run_dir, result = finished_run
  checks = result["export_verification"]
  assert set(checks) == {"onnx", "c"}  # the default export.formats
  assert checks["onnx"]["prediction_agreement"] >= 0.99
  if shutil.which("cc") or shutil.which("gcc"):
    assert checks["c"]["bit_exact"] is True
  assert "## Exported models against the integer reference" in (run_dir / "report.md").read_text()
  assert (run_dir / "c" / "manifest.json").exists()


def test_fake_quant_logits_are_computed_in_float32(monkeypatch):
  """predict_logits traces in "highest" precision whatever the global default (a GPU's TF32
  moved a DARTS network 33 accumulator steps from its integer model on an H100)."""
  import qdarts.finetune as finetune  # noqa: PLC0415

  seen = []
  make_predict = finetune.make_predict

  def recording(*args, **kwargs):
    seen.append(jax.config.jax_default_matmul_precision)
    return make_predict(*args, **kwargs)

  monkeypatch.setattr(finetune, "make_predict", recording)
  space = TinySpace((8, 8, 1), 5, 4, (4,), (1,), ("conv3x3",))
  subnet = space.build((8,), (8,), nnx.Rngs(0), [Choice("conv3x3", 8, 8)])
  with jax.default_matmul_precision("bfloat16"):
    predict_logits(subnet, jnp.zeros((2, 8, 8, 1)))
  assert seen == ["highest"]
