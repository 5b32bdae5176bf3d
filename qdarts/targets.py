"""Resolving ``cost.target``: a built-in name or a path to a target YAML file."""

from importlib import resources
from pathlib import Path

from hwcost import BopsModel, CostModel, load_target
from qdarts.errors import ConfigError


def builtin_targets() -> dict[str, Path | None]:
  """Built-in target names → their YAML file (``None`` for the analytic ``bops`` metric)."""
  found: dict[str, Path | None] = {"bops": None}
  folder = resources.files("qdarts.configs.targets")
  for entry in sorted(folder.iterdir(), key=lambda p: p.name):
    if entry.name.endswith(".yaml"):
      found[entry.name[: -len(".yaml")]] = Path(str(entry))
  return found


def resolve_target(spec: str) -> CostModel:
  """The cost model named by ``spec``: ``bops``, a built-in target, or a YAML file path.

  Raises:
    ConfigError: unknown name (listing the built-in ones).
    hwcost.CostTableError: the target file is invalid (naming file and field).
  """
  builtin = builtin_targets()
  if spec in builtin:
    path = builtin[spec]
    return BopsModel() if path is None else load_target(path)
  if spec.endswith((".yaml", ".yml")) or "/" in spec:
    return load_target(spec)
  raise ConfigError(
    f"cost.target: unknown target {spec!r}; built-in: {', '.join(builtin)}; "
    "or give a path to a target YAML file"
  )


def memory_budgets(model: CostModel) -> dict[str, float]:
  """The target's memory sizes as budgets on SubNet metrics, in bytes.

  ``memory.sram_kib`` bounds ``peak_act_bytes`` (the largest layer's activations must fit the
  on-chip working memory) and ``memory.flash_kib`` bounds ``flash_bytes``; a size the target
  does not declare gives no budget. A measured target inherits them from its analytic part.
  """
  target = getattr(model, "target", None) or getattr(
    getattr(model, "fallback", None), "target", None
  )
  memory = getattr(target, "memory", None)
  if memory is None:
    return {}
  sizes = {"peak_act_bytes": memory.sram_bytes, "flash_bytes": memory.flash_bytes}
  return {metric: float(size) for metric, size in sizes.items() if size is not None}
