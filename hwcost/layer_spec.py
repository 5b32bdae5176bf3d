"""The shape of one quantized layer, as a cost model sees it.

A :class:`LayerSpec` is a plain, hashable record of a convolution or a fully connected layer:
what the search space knows about a layer once its input resolution is fixed. Cost models read
nothing else, so they stay independent of how a layer is built (Flax, ONNX, a LUT row).
"""

import math
import numbers
from dataclasses import dataclass

_OPS = ("conv", "linear")


@dataclass(frozen=True)
class LayerSpec:
  """One convolution (depthwise and grouped included) or one fully connected layer.

  Let k be ``kernel``, g ``groups``, C_in ``cin``, C_out ``cout``, (H_in, W_in) ``in_hw`` and
  (H_out, W_out) ``out_hw``. Convolutions use "SAME" padding, so
  H_out = ⌈H_in / stride⌉ and W_out = ⌈W_in / stride⌉ whatever the dilation. A depthwise
  convolution is a convolution with g = C_in (C_out = m·C_in for a channel multiplier m). A
  linear layer has k = 1, stride 1, g = 1 and (1, 1) spatial size.

  .. math::
    \\text{macs} = H_{out} W_{out} \\, C_{out} \\, (C_{in}/g) \\, k^2
    \\qquad \\text{weight\\_count} = k^2 \\, (C_{in}/g) \\, C_{out}

  Attributes:
    name: where the layer sits, e.g. ``"layer2.conv3x3.pw"``; error messages quote it.
    op: ``"conv"`` or ``"linear"``.
    kernel: square kernel side k (1 for linear).
    stride: spatial stride (1 for linear).
    cin: input channels (input features for linear).
    cout: output channels (output features for linear).
    in_hw: input (H, W) in pixels; ``(1, 1)`` for linear.
    out_hw: output (H, W) in pixels; ``(1, 1)`` for linear.
    groups: channel groups g; it divides both ``cin`` and ``cout``.
    dilation: kernel dilation; it changes neither MACs nor weights, only the receptive field.

  Raises:
    ValueError: a field is not a positive int, ``op`` is unknown, g does not divide C_in and
      C_out, a linear layer has a spatial extent, or ``out_hw`` is not ⌈``in_hw``/stride⌉. The
      message names the layer. (A bad LayerSpec is a bug in the code that built it, not a user
      error, hence ``ValueError``.)

  Example:
    >>> LayerSpec("stem", "conv", 3, 1, 3, 16, (32, 32), (32, 32)).macs
    442368
  """

  name: str
  op: str
  kernel: int
  stride: int
  cin: int
  cout: int
  in_hw: tuple[int, int]
  out_hw: tuple[int, int]
  groups: int = 1
  dilation: int = 1

  def __post_init__(self):
    for field in ("kernel", "stride", "cin", "cout", "groups", "dilation"):
      object.__setattr__(self, field, _as_int(getattr(self, field)))
    for field in ("in_hw", "out_hw"):
      hw = getattr(self, field)
      if isinstance(hw, tuple | list):
        object.__setattr__(self, field, tuple(_as_int(v) for v in hw))
    self._check_fields()
    self._check_shape()

  def _fail(self, what: str):
    raise ValueError(f"LayerSpec {self.name!r}: {what}")

  def _check_fields(self):
    if self.op not in _OPS:
      self._fail(f"op must be one of {', '.join(_OPS)}, got {self.op!r}")
    for field in ("kernel", "stride", "cin", "cout", "groups", "dilation"):
      value = getattr(self, field)
      if not _is_positive_int(value):
        self._fail(f"{field} must be a positive int, got {value!r}")
    for field in ("in_hw", "out_hw"):
      hw = getattr(self, field)
      if not isinstance(hw, tuple) or len(hw) != 2 or not all(_is_positive_int(v) for v in hw):
        self._fail(f"{field} must be two positive ints (H, W), got {hw!r}")
    if self.cin % self.groups or self.cout % self.groups:
      self._fail(f"groups={self.groups} must divide cin={self.cin} and cout={self.cout}")

  def _check_shape(self):
    if self.op == "linear":
      fields = (self.kernel, self.stride, self.groups, self.dilation, self.in_hw, self.out_hw)
      if fields != (1, 1, 1, 1, (1, 1), (1, 1)):
        self._fail(
          "a linear layer needs kernel=stride=groups=dilation=1 and in_hw=out_hw=(1, 1), got "
          f"kernel={self.kernel}, stride={self.stride}, groups={self.groups}, "
          f"dilation={self.dilation}, in_hw={self.in_hw}, out_hw={self.out_hw}"
        )
      return
    expected = tuple(math.ceil(n / self.stride) for n in self.in_hw)
    if self.out_hw != expected:
      self._fail(
        f"out_hw={self.out_hw} is inconsistent with 'SAME' padding: in_hw={self.in_hw} at "
        f"stride {self.stride} gives {expected}"
      )

  @property
  def is_depthwise(self) -> bool:
    """True for a convolution with one group per input channel (g = C_in > 1)."""
    return self.op == "conv" and self.groups == self.cin and self.groups > 1

  @property
  def macs(self) -> int:
    """Multiply-accumulates per inference: H_out·W_out·C_out·(C_in/g)·k² (C_in·C_out if linear)."""
    out_h, out_w = self.out_hw
    return out_h * out_w * self.cout * (self.cin // self.groups) * self.kernel * self.kernel

  @property
  def weight_count(self) -> int:
    """Number of weights, biases excluded: k²·(C_in/g)·C_out."""
    return self.kernel * self.kernel * (self.cin // self.groups) * self.cout

  @property
  def in_elems(self) -> int:
    """Input activation elements per inference: H_in·W_in·C_in."""
    return self.in_hw[0] * self.in_hw[1] * self.cin

  @property
  def out_elems(self) -> int:
    """Output activation elements per inference: H_out·W_out·C_out."""
    return self.out_hw[0] * self.out_hw[1] * self.cout


def _as_int(value):
  """numpy integers become ``int``; anything else is left for the checks to reject."""
  if isinstance(value, numbers.Integral) and not isinstance(value, bool):
    return int(value)
  return value


def _is_positive_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value > 0
