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
