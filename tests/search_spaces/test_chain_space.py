"""User-declared chain spaces: the YAML format, its masks and shapes, and every loader error."""

import copy
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from flax import nnx

from search_spaces import (
  ChainSpace,
  Choice,
  Probs,
  SpaceFileError,
  load_chain_space,
  parse_chain_space,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "spaces" / "example_chain.yaml"

BASE = {
  "schema_version": 1,
  "name": "t",
  "stem": {"channels": 4},
  "layers": [
    {"channels": 4, "candidates": ["conv3x3", "skip"]},
    {"channels": 8, "stride": 2, "candidates": ["dwsep3x3", "mb3x3_e3"]},
    {"channels": 8, "repeat": 2, "candidates": ["mb5x5_e1", "skip"]},
  ],
}


def _with(change):
  doc = copy.deepcopy(BASE)
  change(doc)
  return doc


def test_example_file_builds_a_space():
  space = load_chain_space(EXAMPLE, (8, 8, 1), 10)
  assert isinstance(space, ChainSpace) and space.name == "chain"
  assert space.chain_name == "example_chain"
  assert space.choice_names == ("layer0", "layer1", "layer2.0", "layer2.1", "layer3", "layer4")
  net = space.build((4, 8), (8,), nnx.Rngs(0))
  x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 1))
  mask = np.asarray(space.op_mask(), np.float32)  # (L, O)
  n_ops = len(space.op_names)
  probs = Probs(
    op=jnp.asarray(mask / mask.sum(1, keepdims=True)),
    w=jnp.full((len(mask), n_ops, 2), 0.5),
    a=jnp.ones((len(mask), n_ops, 1)),
  )
  assert net(x, probs).shape == (2, 10)
  assert [s.name for s in space.fixed_layers(net)] == ["stem.conv3x3", "head.conv1x1", "head.fc"]


def test_op_names_mask_and_shapes():
  space = parse_chain_space(BASE, (8, 8, 1), 10)
  assert space.op_names == ("conv3x3", "skip", "dwsep3x3", "mb3x3_e3", "mb5x5_e1")
  assert space.choice_names == ("layer0", "layer1", "layer2.0", "layer2.1")
  assert space.op_mask() == [
    [True, True, False, False, False],
    [False, False, True, True, False],
    [False, True, False, False, True],
    [False, True, False, False, True],
  ]
  net = space.build((8,), (8,), nnx.Rngs(0))
  table = space.candidate_layers(net)
  dw, pw = table[1][2]  # layer1.dwsep3x3: 4→8 at stride 2
  assert (dw.groups, dw.stride, dw.in_hw, pw.cout, pw.out_hw) == (4, 2, (8, 8), 8, (4, 4))
  assert table[0][2] is None  # not listed at layer0
  (dw5, project) = table[2][4]  # layer2.0.mb5x5_e1: 8→8, stride 1 (a repeat copy keeps stride 1)
  assert (dw5.kernel, dw5.stride, dw5.in_hw, project.cout) == (5, 1, (4, 4), 8)


def test_skip_is_masked_at_the_first_copy_of_a_strided_repeat():
  strided = {"channels": 16, "stride": 2, "repeat": 2, "candidates": ["conv3x3", "skip"]}
  doc = _with(lambda d: d["layers"].append(strided))
  mask = parse_chain_space(doc, (8, 8, 1), 10).op_mask()
  assert mask[-2] == [True, False, False, False, False]
  assert mask[-1] == [True, True, False, False, False]


def test_subnet_of_a_chain_space_runs():
  space = parse_chain_space(BASE, (8, 8, 1), 10)
  choices = [Choice("skip", 8, 8), Choice("mb3x3_e3", 4, 8), Choice("skip", 8, 8)] + [
    Choice("mb5x5_e1", 2, 4)
  ]
  subnet = space.build((2, 4, 8), (4, 8), nnx.Rngs(0), choices)
  assert subnet(np.zeros((1, 8, 8, 1), np.float32)).shape == (1, 10)
  with pytest.raises(ValueError, match="layer0: 'dwsep3x3' is not a candidate"):
    space.build((8,), (8,), nnx.Rngs(0), [Choice("dwsep3x3", 8, 8)] + choices[1:])


def _set(path, value):
  """A change that sets ``doc[path[0]][path[1]]… = value``."""

  def change(doc):
    node = doc
    for key in path[:-1]:
      node = node[key]
    node[path[-1]] = value

  return change


def _delete(path):
  def change(doc):
    node = doc
    for key in path[:-1]:
      node = node[key]
    del node[path[-1]]

  return change


NOT_POSITIVE = "expected a positive integer"
BAD_FILES = [
  ("unknown key", _set(["head_chanels"], 8), "head_chanels: unknown key; allowed: schema_version"),
  ("unknown layer key", _set(["layers", 0, "kernel"], 3), r"layers\[0\]\.kernel: unknown key"),
  ("missing stem", _delete(["stem"]), "stem: missing field"),
  ("missing candidates", _delete(["layers", 1, "candidates"]), r"layers\[1\]\.candidates: missing"),
  ("missing stem channels", _set(["stem"], {"kernel": 3}), "stem.channels: missing field"),
  ("schema version", _set(["schema_version"], 2), "schema_version: expected 1 .*got 2"),
  ("empty name", _set(["name"], ""), "name: expected a non-empty string"),
  (
    "unknown candidate",
    _set(["layers", 1, "candidates", 1], "conv7x7"),
    r"layers\[1\]\.candidates\[1\]: unknown candidate 'conv7x7'; known: conv3x3, .*mb\{k\}x\{k\}",
  ),
  (
    "even mbconv kernel",
    _set(["layers", 1, "candidates", 1], "mb4x4_e3"),
    r"layers\[1\]\.candidates\[1\]: unknown candidate 'mb4x4_e3'",
  ),
  (
    "repeated candidate",
    _set(["layers", 0, "candidates"], ["conv3x3", "conv3x3"]),
    r"layers\[0\]\.candidates\[1\]: 'conv3x3' is listed twice",
  ),
  (
    "skip where the shape changes",
    _set(["layers", 1, "candidates"], ["dwsep3x3", "skip"]),
    r"layers\[1\]\.candidates\[1\]: 'skip' needs an unchanged shape .* 4→8 channels at stride 2",
  ),
  (
    "only skip at a strided repeat",
    _set(["layers", 1], {"channels": 8, "stride": 2, "repeat": 2, "candidates": ["skip"]}),
    r"layers\[1\]: no candidate fits the layer's first choice point",
  ),
  ("zero channels", _set(["layers", 0, "channels"], 0), rf"layers\[0\]\.channels: {NOT_POSITIVE}"),
  ("bool channels", _set(["stem", "channels"], True), f"stem.channels: {NOT_POSITIVE}, got True"),
  ("stride 3", _set(["layers", 1, "stride"], 3), r"layers\[1\]\.stride: expected 1 or 2, got 3"),
  ("even stem kernel", _set(["stem", "kernel"], 4), "stem.kernel: expected an odd positive int"),
  ("zero repeat", _set(["layers", 2, "repeat"], 0), rf"layers\[2\]\.repeat: {NOT_POSITIVE}"),
  ("empty layers", _set(["layers"], []), "layers: expected a non-empty list of layers"),
  ("layer not a mapping", _set(["layers", 0], "conv3x3"), r"layers\[0\]: expected a mapping"),
  (
    "candidates not a list",
    _set(["layers", 0, "candidates"], "conv3x3"),
    r"layers\[0\]\.candidates: expected a non-empty list",
  ),
  ("head without channels", _set(["head"], {}), "head.channels: missing field"),
]


@pytest.mark.parametrize(
  ("change", "message"), [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES]
)
def test_bad_file_names_file_and_field(tmp_path, change, message):
  path = tmp_path / "space.yaml"
  path.write_text(yaml.safe_dump(_with(change), sort_keys=False))
  with pytest.raises(SpaceFileError, match=f"^{re.escape(str(path))}: {message}") as info:
    load_chain_space(path, (8, 8, 1), 10)
  assert isinstance(info.value, ValueError) and info.value.source == str(path)


def test_unreadable_files(tmp_path):
  with pytest.raises(SpaceFileError, match="missing.yaml: chain space file not found"):
    load_chain_space(tmp_path / "missing.yaml", (8, 8, 1), 10)
  bad = tmp_path / "bad.yaml"
  bad.write_text("layers: [\n  {channels: 4\n")
  with pytest.raises(SpaceFileError, match=r"bad.yaml: line \d+: not valid YAML"):
    load_chain_space(bad, (8, 8, 1), 10)
  bad.write_text("- a\n- b\n")
  with pytest.raises(SpaceFileError, match="bad.yaml: expected a mapping with keys schema_version"):
    load_chain_space(bad, (8, 8, 1), 10)
