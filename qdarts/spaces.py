"""The config's ``space`` section turned into a search space (one place for every space)."""

from collections.abc import Sequence

from qdarts.config import SpaceConfig
from qdarts.errors import ConfigError
from search_spaces import SearchSpace, TinySpace
from search_spaces.chain import SpaceFileError, load_chain_space
from search_spaces.mbconv import MBConvSpace


def search_space(s: SpaceConfig, input_shape: Sequence[int], num_classes: int) -> SearchSpace:
  """The space ``s.name`` for inputs of ``input_shape`` ``(H, W, C)`` and ``num_classes``.

  Raises:
    ConfigError: a chain-space file is invalid, or the space rejects its arguments (named).
  """
  shape = tuple(input_shape)
  try:
    if s.name == "tiny":
      return TinySpace(shape, num_classes, s.stem_channels, s.channels, s.strides, s.ops)
    if s.name == "mbconv":
      return MBConvSpace(
        shape,
        num_classes,
        stem_channels=s.stem_channels,
        channels=s.channels,
        strides=s.strides,
        repeats=s.repeats or (1,) * len(s.channels),
        kernels=s.kernels,
        expansions=s.expansions,
        allow_skip=s.allow_skip,
      )
    if s.name == "chain":
      return load_chain_space(s.file, shape, num_classes)
    from search_spaces.darts import DartsSpace  # noqa: PLC0415

    return DartsSpace(
      shape,
      num_classes,
      cells=s.cells,
      init_channels=s.init_channels,
      nodes=s.nodes,
      partial_channels=s.partial_channels,
    )
  except SpaceFileError as err:
    raise ConfigError(f"space.file: {err}") from None
  except ValueError as err:
    raise ConfigError(f"space ({s.name}): {err}") from None
