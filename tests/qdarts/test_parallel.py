"""Data parallelism: a search step sharded over 2 forced host devices equals the 1-device step."""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
  """
  import json, sys
  import jax
  import numpy as np
  from qdarts import pipeline
  from qdarts.config import load_config
  from qdarts.parallel import data_mesh
  from qdarts.search import run_search
  from qdarts.supernet import split_supernet

  cfg = load_config(sys.argv[1], sys.argv[2:])
  results = []
  for n in (1, 2):
    setup = pipeline.prepare(cfg)
    setup.supernet.net.calibrate(setup.data.to_input(setup.data.x_weight[:64]))
    graphdef, groups = split_supernet(setup.supernet)
    mesh = data_mesh(jax.devices()[:n])
    out = run_search(cfg, setup.data, graphdef, groups, setup.objective, mesh=mesh)
    leaves = jax.tree.leaves(out.groups)
    results.append(
      (leaves, [len(leaf.sharding.device_set) for leaf in leaves], out.history[-1]["loss"])
    )
  (one, dev1, loss1), (two, dev2, loss2) = results
  diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(one, two))
  scale = max(float(np.max(np.abs(np.asarray(a)))) for a in one)
  print(json.dumps({
    "devices": jax.device_count(), "max_abs_diff": diff, "scale": scale,
    "devices_per_leaf_1": max(dev1), "devices_per_leaf_2": min(dev2),
    "loss_1": loss1, "loss_2": loss2,
  }))
  """
)


def test_one_search_step_on_two_devices_equals_one_device(
  quickstart_path, tiny_overrides, compilation_cache_dir, tmp_path
):
  overrides = [
    *tiny_overrides,
    "data.batch_size=400",  # one step per epoch: a weight step and an architecture step
    "search.epochs=1",
    "search.warmup_epochs=0",
  ]
  env = {
    **os.environ,
    "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
    "JAX_PLATFORMS": "cpu",
    "JAX_COMPILATION_CACHE_DIR": compilation_cache_dir,
  }
  proc = subprocess.run(
    [sys.executable, "-c", SCRIPT, str(quickstart_path), *overrides],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    cwd=tmp_path,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["devices"] == 2
  assert out["devices_per_leaf_1"] == 1 and out["devices_per_leaf_2"] == 2  # really sharded
  assert out["max_abs_diff"] <= 1e-5 * max(out["scale"], 1.0), out
  assert abs(out["loss_1"] - out["loss_2"]) <= 1e-5, out
  print(out)
