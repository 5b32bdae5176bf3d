"""Checkpoints: a search killed with SIGKILL mid-epoch and resumed ends exactly like an
uninterrupted one; SIGINT stops cleanly with a checkpoint; a non-finite step changes nothing."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

RUN = [
  "data.dataset=synthetic",
  "data.batch_size=16",
  "space.stem_channels=4",
  "space.channels=[4,8]",
  "space.strides=[1,2]",
  "space.ops=[conv3x3,dwsep3x3,skip]",
  "search.epochs=5",
  "search.warmup_epochs=1",
  "search.checkpoint_every=4",
  "train.epochs=1",
  "export.formats=[onnx]",
]


def _cmd(*args):
  return [sys.executable, "-m", "qdarts.cli", "search", *map(str, args)]


def _env(cache):
  return {**os.environ, "QDARTS_CACHE_DIR": cache}


def _wait_for_mid_epoch_checkpoint(proc, folder, timeout=240):
  """Polls until a checkpoint inside epoch ≥ 2 (step > 0) exists; returns its name."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    names = sorted(p.name for p in folder.glob("search-E*-S*.npz")) if folder.exists() else []
    mid = [n for n in names if not n.endswith("S0000000.npz") and n >= "search-E0002"]
    if mid:
      return mid[-1]
    assert proc.poll() is None, proc.communicate()
    time.sleep(0.05)
  raise AssertionError("no mid-epoch checkpoint appeared")


def _outcome(run):
  subnet = json.loads((run / "subnet.json").read_text())
  result = json.loads((run / "result.json").read_text())
  return (
    [(x["op"], x["w_bits"], x["a_bits"]) for x in subnet["layers"]],
    result["accuracy"],
    result["cost"],
    result["search_history"],
  )


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(
  quickstart_path, tmp_path, compilation_cache_dir
):
  env = _env(compilation_cache_dir)
  whole = subprocess.run(
    _cmd("--out", tmp_path / "whole", quickstart_path, *RUN),
    env=env,
    capture_output=True,
    text=True,
    cwd=tmp_path,  # not the checkout: `python -m qdarts` must find the installed package
  )
  assert whole.returncode == 0, whole.stderr
  killed = tmp_path / "killed"
  proc = subprocess.Popen(
    _cmd("--out", killed, quickstart_path, *RUN),
    env=env,
    cwd=tmp_path,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
  )
  name = _wait_for_mid_epoch_checkpoint(proc, killed / "checkpoints")
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (killed / "result.json").exists(), "killed too late: the run had finished"
  resumed = subprocess.run(
    _cmd("--resume", killed), env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
  )
  assert resumed.returncode == 0, resumed.stderr
  assert _outcome(killed) == _outcome(tmp_path / "whole"), f"resumed from {name}"


def test_sigint_stops_at_a_step_boundary_with_a_checkpoint(
  quickstart_path, tmp_path, compilation_cache_dir
):
  run = tmp_path / "run"
  proc = subprocess.Popen(
    _cmd("--out", run, quickstart_path, *RUN),
    env=_env(compilation_cache_dir),
    cwd=tmp_path,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
  )
  _wait_for_mid_epoch_checkpoint(proc, run / "checkpoints")
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, err
  assert "interrupted at epoch" in err and "--resume" in err
  assert not (run / "result.json").exists()
  assert list((run / "checkpoints").glob("search-E*-S*.npz"))


def test_a_poisoned_batch_is_skipped_and_the_weights_stay_finite():
  from qdarts.steps import TrainState, make_weight_step

  def apply_fn(params, frozen, x, key, tau):
    weights, _ = params
    return x.reshape(len(x), -1) @ weights

  tx = optax.adam(1e-2)
  params = (jnp.ones((4, 3)), jnp.ones((1,)))
  step = make_weight_step(apply_fn, tx)
  train = TrainState(params, tx.init(params))
  x, y = jnp.ones((2, 2, 2, 1)), jnp.array([0, 1])
  key, tau = jax.random.key(0), jnp.float32(1.0)
  poisoned = x.at[0, 0, 0, 0].set(jnp.nan)
  after_nan, m = step(train, None, poisoned, y, key, tau)
  assert float(m["skipped"]) == 1.0 and not np.isfinite(float(m["loss"]))
  for a, b in zip(jax.tree.leaves(after_nan), jax.tree.leaves(train), strict=True):
    np.testing.assert_array_equal(a, b)  # nothing changed, optimizer state included
  after_good, m = step(after_nan, None, x, y, key, tau)
  assert float(m["skipped"]) == 0.0
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(after_good))
  assert not np.array_equal(after_good.params[0], train.params[0])  # a good batch trains


def test_repeated_non_finite_steps_stop_the_search(quickstart_path, tmp_path):
  import dataclasses

  import pytest

  from qdarts import pipeline
  from qdarts.config import load_config
  from qdarts.errors import NonFiniteSearch
  from qdarts.search import run_search
  from qdarts.supernet import split_supernet

  cfg = load_config(quickstart_path, [*RUN, "search.max_skipped_steps=3"])
  setup = pipeline.prepare(cfg)
  setup.supernet.net.calibrate(setup.data.to_input(setup.data.x_weight[:32]))
  x = jnp.full(setup.data.x_weight.shape, jnp.nan, jnp.float32)  # every batch poisoned
  data = dataclasses.replace(setup.data, x_weight=x, input_spec=None)
  graphdef, groups = split_supernet(setup.supernet)
  with pytest.raises(NonFiniteSearch, match="not finite in [0-9]+ consecutive steps"):
    run_search(cfg, data, graphdef, groups, setup.objective, checkpoint_dir=tmp_path / "ckpt")
