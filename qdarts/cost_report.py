"""Costing a saved SubNet on any target: the `qdarts cost` command's table and totals."""

import json
from pathlib import Path

from flax import nnx

from hwcost import CostModel, LayerSpec
from qdarts.config import SpaceConfig, build_section
from qdarts.errors import ConfigError
from qdarts.spaces import search_space
from search_spaces import Choice

CHAIN_SPACES = ("tiny", "mbconv", "chain")

SUBNET_FORMAT = "qdarts.subnet/1"
FIXED_BITS = 8
_REQUIRED = (
  "space_config",
  "input_shape",
  "num_classes",
  "w_bit_candidates",
  "a_bit_candidates",
  "layers",
)


def read_subnet(path: Path) -> dict:
  """Reads and checks a subnet.json written by `qdarts search`.

  Raises:
    ConfigError: missing file, not JSON, or not a qdarts SubNet document.
  """
  path = Path(path)
  try:
    doc = json.loads(path.read_text())
  except FileNotFoundError as e:
    raise ConfigError(f"{path}: SubNet file not found") from e
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ConfigError(f"{path}: not a readable JSON file ({e.__class__.__name__})") from e
  if not isinstance(doc, dict) or doc.get("format") != SUBNET_FORMAT:
    raise ConfigError(f"{path}: not a qdarts SubNet file (expected format {SUBNET_FORMAT!r})")
  if doc.get("space") not in CHAIN_SPACES:
    raise ConfigError(
      f"{path}: space: {doc.get('space')!r} is not a chain space this command costs "
      f"(one of {', '.join(CHAIN_SPACES)})"
    )
  missing = [k for k in _REQUIRED if k not in doc]
  if missing:
    raise ConfigError(
      f"{path}: missing field {missing[0]!r} (a SubNet file has {', '.join(_REQUIRED)})"
    )
  try:
    ops = _space(doc).op_names
    for i, layer in enumerate(doc["layers"]):
      op = layer.get("op") if isinstance(layer, dict) else None
      if op not in ops:
        raise ConfigError(f"{path}: layers[{i}].op: {op!r} is not one of the space's ops {ops}")
    subnet_layers(doc)
  except (KeyError, TypeError, ValueError, IndexError) as e:
    raise ConfigError(
      f"{path}: not a valid {doc['space']} SubNet ({e.__class__.__name__}: {e})"
    ) from e
  return doc


def subnet_layers(doc: dict) -> list[tuple[LayerSpec, int, int]]:
  """Every quantized layer of the SubNet with its (w_bits, a_bits), in execution order."""
  space = _space(doc)
  choices = [
    Choice(layer["op"], layer["w_bits"] or FIXED_BITS, layer["a_bits"] or FIXED_BITS)
    for layer in doc["layers"]
  ]
  net = space.build(doc["w_bit_candidates"], doc["a_bit_candidates"], nnx.Rngs(0), choices)
  candidates = space.candidate_layers(net)
  stem, *rest = space.fixed_layers(net)  # the stem runs first, the other fixed layers last
  rows = [(stem, FIXED_BITS, FIXED_BITS)]
  for l, choice in enumerate(choices):
    for spec in candidates[l][space.op_names.index(choice.op)]:
      rows.append((spec, choice.w_bits, choice.a_bits))
  return [*rows, *((spec, FIXED_BITS, FIXED_BITS) for spec in rest)]


def _space(doc: dict):
  """The chain space a SubNet document was searched in, rebuilt from its ``space_config``."""
  space_cfg = build_section(SpaceConfig, doc["space_config"], "space_config")
  return search_space(space_cfg, doc["input_shape"], doc["num_classes"])


def cost_rows(layers: list[tuple[LayerSpec, int, int]], model: CostModel) -> list[dict]:
  """One row per layer: name, shape, bits, every metric of ``model``, provenance."""
  rows = []
  for spec, w, a in layers:
    cost = model.cost(spec, w, a)
    shape = f"{spec.cin}→{spec.cout} k{spec.kernel} s{spec.stride} {spec.in_hw[0]}×{spec.in_hw[1]}"
    if spec.groups > 1:
      shape += f" g{spec.groups}"
    rows.append(
      {
        "layer": spec.name,
        "shape": shape,
        "w_bits": w,
        "a_bits": a,
        **dict(cost.values),
        "provenance": cost.provenance,
      }
    )
  return rows


def totals(rows: list[dict], metrics: tuple[str, ...]) -> dict:
  """Sums of the additive metrics; ``act_bytes`` is the peak over layers (not additive)."""
  out = {m: float(sum(r[m] for r in rows)) for m in metrics if m != "act_bytes"}
  if "act_bytes" in metrics:
    out["peak_act_bytes"] = float(max(r["act_bytes"] for r in rows))
  return out
