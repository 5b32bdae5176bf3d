"""The run config: one YAML file parsed once into frozen dataclasses, with dotted overrides.

Sections: ``data``, ``space``, ``quant``, ``search``, ``cost``, ``train``, ``export``. Unknown
keys, wrong types and out-of-range values fail at load time with the file, the dotted key and
what was expected, e.g. ``quickstart.yaml: search.sampler: 'gumble' is not one of softmax,
gumbel, gumbel_hard``. Nothing downstream calls ``cfg.get(key, default)``.
"""

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from qdarts.errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
  """The ``data`` section: which dataset, where its files are, batch sizes, augmentation.

  ``digits`` (scikit-learn's 8×8) and ``synthetic`` need no files. ``cifar10``, ``fashion_mnist``
  and ``mnist`` are looked for in ``data_dir``, ``$QDARTS_DATA_DIR``, ``~/.cache/qdarts/datasets``
  and Debian's ``/usr/share/datasets`` (see :mod:`qdarts.datasets.locate`).
  """

  dataset: Literal["digits", "synthetic", "cifar10", "fashion_mnist", "mnist"] = "digits"
  batch_size: int = 64  # per step, for the weight and the architecture halves
  # digits/synthetic: held-out share, never seen by the search (real datasets: official split)
  test_fraction: float = 0.2
  eval_batch_size: int = 256
  data_dir: str | None = None  # folder holding the dataset (or a parent: cifar10/, mnist/, …)
  download: bool = False  # fetch the official files (SHA-256 checked) when not found
  augment: bool | None = None  # crop + flip training batches; null: on for cifar10 only
  augment_pad: int | None = None  # crop padding, pixels; null: 4 (cifar10), 2 (28×28), 1 (8×8)
  augment_flip: bool | None = None  # null: flip cifar10 and fashion_mnist, not digits
  subset: int | None = None  # use only the first N training samples (quick runs)
  test_subset: int | None = None  # use only the first N test samples

  def __post_init__(self):
    for key in ("subset", "test_subset"):
      value = getattr(self, key)
      if value is not None and value < 1:
        raise ConfigError(f"data.{key}: expected a positive integer or null, got {value!r}")
    if self.augment_pad is not None and self.augment_pad < 0:
      raise ConfigError(f"data.augment_pad: expected an integer >= 0, got {self.augment_pad!r}")


@dataclass(frozen=True)
class SpaceConfig:
  """The search space. ``name`` picks it; each space reads the fields marked for it."""

  name: Literal["tiny", "mbconv", "chain", "darts"] = "tiny"
  stem_channels: int = 16  # tiny, mbconv
  channels: tuple[int, ...] = (16, 24, 24, 32)  # tiny: per choice layer; mbconv: per stage
  strides: tuple[int, ...] = (1, 2, 1, 1)  # tiny: per choice layer; mbconv: first block per stage
  ops: tuple[str, ...] = ("conv3x3", "conv5x5", "dwsep3x3", "skip")  # tiny candidates
  repeats: tuple[int, ...] = ()  # mbconv: blocks per stage (empty: one each)
  kernels: tuple[int, ...] = (3, 5, 7)  # mbconv: depthwise kernel candidates
  expansions: tuple[int, ...] = (1, 3, 6)  # mbconv: expansion-ratio candidates
  allow_skip: bool = True  # mbconv: skip a block where the shape allows
  file: str | None = None  # chain: path to a space YAML (relative to the config file)
  cells: int = 8  # darts: cells of the search network
  init_channels: int = 16  # darts: channels of the first cell
  nodes: int = 4  # darts: intermediate nodes per cell
  partial_channels: int = 4  # darts: K, 1/K of the channels enter the mixed op (PC-DARTS)


@dataclass(frozen=True)
class QuantConfig:
  w_bits: tuple[int, ...] = (2, 4, 8)  # candidate weight bit-widths
  a_bits: tuple[int, ...] = (2, 4, 8)  # candidate activation bit-widths


@dataclass(frozen=True)
class SearchConfig:
  epochs: int = 30
  warmup_epochs: int = 10  # weight steps only, before architecture steps begin
  sampler: Literal["softmax", "gumbel", "gumbel_hard"] = "gumbel"
  tau_start: float = 5.0  # temperature, decayed exponentially over the arch epochs
  tau_end: float = 0.5
  weight_optimizer: Literal["adam", "sgd"] = "adam"  # cosine-decayed; weights and LSQ steps
  weight_lr: float = 3e-3
  weight_momentum: float = 0.9  # sgd only
  weight_decay: float = 3e-4
  arch_lr: float = 3e-3  # Adam (op and bit logits)
  arch_weight_decay: float = 1e-3
  checkpoint_every: int = 100  # steps between checkpoints (0: only at the end of each epoch)
  keep_checkpoints: int = 3  # the newest K are kept
  max_skipped_steps: int = 10  # consecutive non-finite steps before the search stops


CostMetric = Literal["bops", "latency_ms", "energy_uj", "flash_bytes", "peak_act_bytes"]
CostForm = Literal["linear", "hinge", "log", "budget"]


@dataclass(frozen=True)
class CostTerm:
  metric: CostMetric = "bops"
  form: CostForm = "linear"  # see qdarts.objective.CostObjective
  weight: float = 0.5  # λ (the starting λ of a budget term)
  budget: float | None = None  # hinge and budget: the target value, in the metric's unit


@dataclass(frozen=True)
class CostConfig:
  target: str = "bops"  # built-in target name or a path to a target YAML file
  # One cost term, or `terms` (a list of {metric, form, weight, budget}) for several.
  metric: CostMetric = "bops"
  form: CostForm = "linear"
  weight: float = 0.5
  budget: float | None = None
  terms: tuple[CostTerm, ...] = ()  # when given, replaces metric/form/weight/budget
  dual_lr: float = 0.05  # budget terms: λ step of the dual ascent, per arch step

  def resolved_terms(self) -> tuple[CostTerm, ...]:
    return self.terms or (CostTerm(self.metric, self.form, self.weight, self.budget),)


@dataclass(frozen=True)
class TrainConfig:
  epochs: int = 20  # QAT fine-tune of the derived SubNet
  optimizer: Literal["adam", "sgd"] = "adam"
  lr: float = 1e-3
  momentum: float = 0.9
  weight_decay: float = 1e-4
  cells: int = 20  # darts: cells of the derived network trained from scratch (paper: 20)
  init_channels: int = 36  # darts: its first cell's channels (paper: 36 for CIFAR-10)


@dataclass(frozen=True)
class ExportConfig:
  # model.onnx is always written; tflite (pip install 'qdarts[tflite]') and c (a folder with
  # model.h/.c, the C runtime and a manifest) on request; each is verified against the
  # integer model
  formats: tuple[Literal["onnx", "tflite", "c"], ...] = ("onnx", "c")
  # TFLite filter containers: int8 for every filter, or int4 for w_bits <= 4 (half those
  # layers' bytes, but XNNPACK, LiteRT's default runtime, takes no INT4 filter: those layers
  # then run on the builtin kernels' fixed point and the model drifts from fake-quant)
  tflite_filters: Literal["int8", "int4"] = "int8"


@dataclass(frozen=True)
class Config:
  name: str = "run"
  seed: int = 0
  data: DataConfig = field(default_factory=DataConfig)
  space: SpaceConfig = field(default_factory=SpaceConfig)
  quant: QuantConfig = field(default_factory=QuantConfig)
  search: SearchConfig = field(default_factory=SearchConfig)
  cost: CostConfig = field(default_factory=CostConfig)
  train: TrainConfig = field(default_factory=TrainConfig)
  export: ExportConfig = field(default_factory=ExportConfig)


# ----- parsing ------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
  if typing.get_origin(tp) is Literal:
    return "one of " + ", ".join(str(a) for a in typing.get_args(tp))
  if typing.get_origin(tp) is tuple:
    return f"a list of {_type_name(typing.get_args(tp)[0])}"
  if typing.get_origin(tp) in (typing.Union, types.UnionType):
    return " or ".join(_type_name(a) for a in typing.get_args(tp))
  return {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "true or false",
    type(None): "null",
  }.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, where: str) -> Any:
  """Checks ``value`` against the annotation ``tp``; returns it in the dataclass's type."""
  origin = typing.get_origin(tp)
  if dataclasses.is_dataclass(tp):
    if not isinstance(value, dict):
      raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
    return build_section(tp, value, where)
  if origin is Literal:
    if value not in typing.get_args(tp):
      raise ConfigError(f"{where}: {value!r} is not {_type_name(tp)}")
    return value
  if origin in (typing.Union, types.UnionType):
    for arg in typing.get_args(tp):
      try:
        return _coerce(value, arg, where)
      except ConfigError:
        continue
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
  if origin is tuple:
    if not isinstance(value, list | tuple):
      raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    (item,) = typing.get_args(tp)[:1]
    return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
  if tp is type(None):
    if value is not None:
      raise ConfigError(f"{where}: expected null, got {value!r}")
    return None
  if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
    return float(value)
  if tp is int and isinstance(value, int) and not isinstance(value, bool):
    return value
  if tp in (str, bool) and isinstance(value, tp):
    return value
  raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def build_section(cls: type, raw: dict, where: str) -> Any:
  hints = typing.get_type_hints(cls)
  names = [f.name for f in dataclasses.fields(cls)]
  for key in raw:
    if key not in hints:
      raise ConfigError(
        f"{where}{'.' if where else ''}{key}: unknown key; allowed: {', '.join(names)}"
      )
  kwargs = {k: _coerce(v, hints[k], f"{where}{'.' if where else ''}{k}") for k, v in raw.items()}
  return cls(**kwargs)


def _apply_override(raw: dict, override: str) -> None:
  """``a.b.c=value`` sets ``raw['a']['b']['c']``; the value is parsed as YAML (``[2,4]``)."""
  if "=" not in override:
    raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. search.epochs=3")
  key, text = override.split("=", 1)
  try:
    value = yaml.safe_load(text)
  except yaml.YAMLError as e:
    raise ConfigError(f"override {key}: cannot parse {text!r} ({e.__class__.__name__})") from e
  *parents, leaf = key.strip().split(".")
  node = raw
  for p in parents:
    child = node.setdefault(p, {})
    if not isinstance(child, dict):
      raise ConfigError(f"override {key}: {p} is not a section")
    node = child
  node[leaf] = value


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
  """Reads a YAML config, applies dotted overrides, validates, and returns a :class:`Config`.

  Raises:
    ConfigError: naming the file and dotted key, for any problem.
  """
  path = Path(path)
  try:
    raw = yaml.safe_load(path.read_text()) or {}
  except FileNotFoundError as e:
    raise ConfigError(f"{path}: config file not found") from e
  except (OSError, UnicodeDecodeError) as e:
    raise ConfigError(f"{path}: cannot read config ({e})") from e
  except yaml.YAMLError as e:
    mark = getattr(e, "problem_mark", None)
    line = f" line {mark.line + 1}" if mark else ""
    raise ConfigError(f"{path}:{line}: not valid YAML ({getattr(e, 'problem', e)})") from e
  if not isinstance(raw, dict):
    raise ConfigError(f"{path}: expected a mapping of sections at the top level")
  raw.setdefault("name", path.stem)
  for o in overrides:
    _apply_override(raw, o)
  try:
    cfg = build_section(Config, raw, "")
  except ConfigError as e:
    raise ConfigError(f"{path.name}: {e}") from None
  _check_ranges(cfg, path.name)
  return _resolve_space_file(cfg, path)


def _resolve_space_file(cfg: Config, config_path: Path) -> Config:
  """A relative ``space.file`` is read from the working directory, else beside the config file
  (so a config and its space YAML travel together), else from the spaces shipped in
  ``qdarts.configs.spaces``."""
  file = cfg.space.file
  if file is None or Path(file).is_absolute() or Path(file).exists():
    return cfg
  beside = config_path.parent / file
  if not beside.exists():  # a space shipped with qdarts, e.g. example_chain.yaml
    from importlib import resources  # noqa: PLC0415

    beside = Path(str(resources.files("qdarts.configs.spaces") / Path(file).name))
    if not beside.exists():
      return cfg
  return dataclasses.replace(cfg, space=dataclasses.replace(cfg.space, file=str(beside)))


def _check_ranges(cfg: Config, where: str) -> None:
  def need(ok: bool, key: str, expected: str, got: Any) -> None:
    if not ok:
      raise ConfigError(f"{where}: {key}: expected {expected}, got {got!r}")

  d, s, q, se, c, t = cfg.data, cfg.space, cfg.quant, cfg.search, cfg.cost, cfg.train
  need(d.batch_size >= 1, "data.batch_size", "a positive integer", d.batch_size)
  need(0 < d.test_fraction < 1, "data.test_fraction", "a fraction in (0, 1)", d.test_fraction)
  if s.name in ("tiny", "mbconv"):
    _check_chain_space(s, need)
  if s.name == "chain":
    need(s.file is not None, "space.file", "a space YAML path when space.name is chain", None)
  if s.name == "darts":
    for key in ("cells", "init_channels", "nodes", "partial_channels"):
      need(getattr(s, key) >= 1, f"space.{key}", "a positive integer", getattr(s, key))
    need(
      s.init_channels % s.partial_channels == 0,
      "space.init_channels",
      f"a multiple of space.partial_channels ({s.partial_channels})",
      s.init_channels,
    )
  for key, bits in (("quant.w_bits", q.w_bits), ("quant.a_bits", q.a_bits)):
    need(len(bits) >= 1, key, "a non-empty list of bit-widths", list(bits))
    need(
      all(2 <= b <= 8 for b in bits) and len(set(bits)) == len(bits),
      key,
      "distinct bit-widths between 2 and 8",
      list(bits),
    )
  need(se.epochs >= 1, "search.epochs", "a positive integer", se.epochs)
  need(
    0 <= se.warmup_epochs < se.epochs,
    "search.warmup_epochs",
    f"an integer in [0, search.epochs={se.epochs})",
    se.warmup_epochs,
  )
  need(
    se.tau_start > 0 and se.tau_end > 0,
    "search.tau_start/tau_end",
    "positive numbers",
    (se.tau_start, se.tau_end),
  )
  need(
    se.weight_lr > 0 and se.arch_lr > 0,
    "search.weight_lr/arch_lr",
    "positive numbers",
    (se.weight_lr, se.arch_lr),
  )
  for i, term in enumerate(c.resolved_terms()):
    key = f"cost.terms[{i}]." if c.terms else "cost."
    need(term.weight >= 0, f"{key}weight", "a number >= 0", term.weight)
    need(
      term.form not in ("hinge", "budget") or (term.budget is not None and term.budget > 0),
      f"{key}budget",
      f"a positive budget in the metric's unit when {key}form is {term.form}",
      term.budget,
    )
  need(c.dual_lr > 0, "cost.dual_lr", "a positive number", c.dual_lr)
  for key, low in (("checkpoint_every", 0), ("keep_checkpoints", 1), ("max_skipped_steps", 1)):
    value = getattr(se, key)
    need(value >= low, f"search.{key}", f"an integer >= {low}", value)
  need(t.epochs >= 0, "train.epochs", "an integer >= 0", t.epochs)
  need(t.lr > 0, "train.lr", "a positive number", t.lr)
  need(
    len(cfg.export.formats) >= 1, "export.formats", "at least one format", list(cfg.export.formats)
  )


def _check_chain_space(s: SpaceConfig, need) -> None:
  need(len(s.channels) >= 1, "space.channels", "at least one entry", list(s.channels))
  need(
    len(s.strides) == len(s.channels),
    "space.strides",
    f"{len(s.channels)} entries (one per channel entry)",
    list(s.strides),
  )
  need(all(st in (1, 2) for st in s.strides), "space.strides", "strides of 1 or 2", list(s.strides))
  need(
    all(ch >= 1 for ch in (*s.channels, s.stem_channels)),
    "space.channels",
    "positive channel counts",
    list(s.channels),
  )
  if s.name == "tiny":
    need(len(s.ops) >= 1, "space.ops", "a non-empty list of ops", list(s.ops))
    from search_spaces.candidates import CANDIDATE_OPS  # noqa: PLC0415 (jax import, lazily)

    for i, op in enumerate(s.ops):
      need(op in CANDIDATE_OPS, f"space.ops[{i}]", "one of " + ", ".join(CANDIDATE_OPS), op)
  else:  # mbconv
    need(
      not s.repeats or len(s.repeats) == len(s.channels),
      "space.repeats",
      f"{len(s.channels)} entries (blocks per stage) or none",
      list(s.repeats),
    )
    need(all(r >= 1 for r in s.repeats), "space.repeats", "positive counts", list(s.repeats))
    need(
      len(s.kernels) >= 1 and all(k in (3, 5, 7) for k in s.kernels),
      "space.kernels",
      "kernel sizes among 3, 5, 7",
      list(s.kernels),
    )
    need(
      len(s.expansions) >= 1 and all(e >= 1 for e in s.expansions),
      "space.expansions",
      "positive expansion ratios",
      list(s.expansions),
    )


def config_to_dict(cfg: Config) -> dict:
  """The resolved config as plain YAML-able data (tuples become lists)."""

  def plain(v):
    if isinstance(v, tuple | list):
      return [plain(x) for x in v]
    if isinstance(v, dict):
      return {k: plain(x) for k, x in v.items()}
    return v

  return plain(dataclasses.asdict(cfg))
