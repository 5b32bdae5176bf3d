"""Batched, quantized building blocks of the PC-DARTS cells (``search_spaces.darts``).

The search network runs every candidate op of every edge, so the ops are not built one module
per (edge, op) as in the PyTorch reference: the edges that leave the same states, and the ops
of one kind (the two separable convs, the two dilated convs), are *stacked* along a group axis
and run as one computation. That keeps the traced program small (compile time) and the
tensors large enough for XLA:CPU to run them fast.

Layout: activations ``(N, H, W, G, c)`` — G groups of c channels (one group per (edge, op));
depthwise kernels ``(G, k, k, c)``; pointwise kernels ``(G, c_in, c_out)``; per-output-channel
LSQ weight steps ``(G, B_w, c_out)``; activation steps ``(G, B_a)``.

Depthwise convolutions are written as sums of k² shifted, broadcast multiplies (one fused loop
on XLA:CPU), not ``conv_general_dilated``: on a 64×32×32×64 input a 5×5 depthwise forward
takes 6 ms this way against 128 ms for XLA:CPU's grouped convolution, and its input gradient
32 ms against 131 ms (2-core CPU, jax 0.10.2). Grouped 1×1 convolutions are einsums: XLA's
grouped-conv gradient is 30× slower. Reductions (BN statistics, LSQ step and probability
gradients, depthwise kernel gradients) are variadic: one pass over the data for all sums.
"""

import math
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from quant import QScale, act_qrange, init_weight_step, weight_qrange
from search_spaces.ops import fixed_bias

BN_EPS = 1e-5


# --- pure functions -------------------------------------------------------------------------


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def lsq_mix(x: jax.Array, steps: tuple, probs: tuple, spec: tuple) -> jax.Array:
  r"""Σ_b p_b·Q_b(x), Q_b LSQ fake quantization, with a hand-written backward pass.

  Let v_b = x / s_b and c_b = clip(v_b, Q_n, Q_p). Forward: Σ_b p_b·s_b·round(c_b). Backward
  (straight-through round, LSQ's step gradient scaled by g_b):

  .. math::
    ∂/∂x = Σ_b p_b·c'_b, \quad ∂/∂s_b = g_b·p_b·(round(c_b) − c'_b·v_b), \quad
    ∂/∂p_b = s_b·round(c_b)

  with c'_b = 1 inside the range, 0 outside and ½ on its bounds — exactly the gradients that
  autodiff of :func:`quant.lsq_quantize` gives (``jnp.clip`` splits ties), in a few fused
  passes instead of the dozens of HLO ops of the autodiff graph (compile time).

  Args:
    x: the values, any shape.
    steps: per bit-width, the step sizes, broadcastable to ``x``.
    probs: per bit-width, the probabilities, broadcastable to ``x``.
    spec: per bit-width, static ``(Q_n, Q_p, g)``.
  """
  out = 0.0
  for s, p, (qn, qp, _) in zip(steps, probs, spec, strict=True):
    out = out + p * s * jnp.round(jnp.clip(x / s, qn, qp))
  return out


def _lsq_mix_fwd(x, steps, probs, spec):
  return lsq_mix(x, steps, probs, spec), (x, steps, probs)


def _lsq_mix_bwd(spec, res, g):
  x, steps, probs = res
  dx, step_terms, prob_terms = 0.0, [], []
  for s, p, (qn, qp, grad_scale) in zip(steps, probs, spec, strict=True):
    v = x / s
    q = jnp.round(jnp.clip(v, qn, qp))
    inside = (v > qn) & (v < qp)
    slope = jnp.where(inside, 1.0, jnp.where((v == qn) | (v == qp), 0.5, 0.0))
    dx = dx + p * slope * g
    step_terms.append(grad_scale * p * g * (q - slope * v))
    prob_terms.append(g * s * q)
  # one pass over (x, g) for all 2·B reductions: 5× faster than separate sums on XLA:CPU
  sums = sum_to_shape([*step_terms, *prob_terms], steps[0].shape)
  n = len(steps)
  d_probs = [sum_to_shape([t], p.shape)[0] for t, p in zip(sums[n:], probs, strict=True)]
  return dx, tuple(sums[:n]), tuple(d_probs)


lsq_mix.defvjp(_lsq_mix_fwd, _lsq_mix_bwd)


def sum_to_shape(terms: Sequence[jax.Array], shape: tuple[int, ...]) -> list[jax.Array]:
  """Sums each of ``terms`` (one shape) down to ``shape``, the shape they were broadcast from
  (numpy alignment), in one variadic reduction: XLA:CPU then reads the inputs once."""
  ndim = terms[0].ndim
  lead = ndim - len(shape)
  axes = tuple(range(lead)) + tuple(
    lead + i for i, n in enumerate(shape) if n == 1 and terms[0].shape[lead + i] != 1
  )
  if not axes:
    return [t.reshape(shape) for t in terms]
  zeros = tuple(jnp.zeros((), t.dtype) for t in terms)
  sums = jax.lax.reduce(
    tuple(terms), zeros, lambda a, b: tuple(u + v for u, v in zip(a, b, strict=True)), axes
  )
  return [t.reshape(shape) for t in sums]


def mix_act_groups(
  x: jax.Array, steps: jax.Array, probs: jax.Array, bits: Sequence[int]
) -> jax.Array:
  """Bit-mixed unsigned LSQ quantization with one quantizer per group: x̃ = Σ_b r_b·Q_b(x).

  Args:
    x: ``(N, H, W, G, c)`` activations; values below 0 are clipped to 0 (the quantizers are
      unsigned, as every quantized layer in qdarts takes a post-ReLU input).
    steps: ``(G, Ba)`` LSQ step of group g's quantizer at each candidate bit-width.
    probs: ``(G, Ba)`` probabilities r_b of each bit-width, per group.
    bits: the ``Ba`` candidate bit-widths (static).

  Returns:
    ``(N, H, W, G, c)``; the LSQ gradient scale uses N_elems = H·W·c, the elements of one
    sample that share a step (as :func:`quant.quantize_activation` for one layer).
  """
  per_sample = math.prod(x.shape[1:3]) * x.shape[-1]
  spec = tuple((*act_qrange(b), 1.0 / math.sqrt(per_sample * act_qrange(b)[1])) for b in bits)
  split = range(len(bits))
  return lsq_mix(
    x, tuple(steps[:, i, None] for i in split), tuple(probs[:, i, None] for i in split), spec
  )


def mix_weight_groups(
  w: jax.Array, steps: jax.Array, probs: jax.Array, bits: Sequence[int]
) -> jax.Array:
  """Bit-mixed per-output-channel LSQ weights of G stacked kernels: W̃ = Σ_b q_b·Q_b(W).

  Args:
    w: ``(G, ..., c_out)`` kernels (depthwise ``(G, k, k, c)``, pointwise ``(G, c_in, c_out)``).
    steps: ``(G, Bw, c_out)``.
    probs: ``(G, Bw)``.
    bits: the ``Bw`` candidate bit-widths (static).

  Returns:
    ``w``'s shape; the gradient scale uses N = prod(w.shape[1:-1]), the weights of one output
    channel of one kernel (as :func:`quant.quantize_weight`).
  """
  fan = math.prod(w.shape[1:-1])
  spec = tuple((*weight_qrange(b), 1.0 / math.sqrt(fan * weight_qrange(b)[1])) for b in bits)
  lead = (w.shape[0],) + (1,) * (w.ndim - 2)
  split = range(len(bits))
  return lsq_mix(
    w,
    tuple(steps[:, i].reshape(*lead, w.shape[-1]) for i in split),
    tuple(probs[:, i].reshape(*lead, 1) for i in split),
    spec,
  )


def init_weight_steps(w: jax.Array, bits: Sequence[int]) -> jax.Array:
  """LSQ initial steps ``(G, Bw, c_out)`` of ``(G, ..., c_out)`` kernels: 2·mean|w|/√Q_P.

  :func:`quant.init_weight_step` per kernel and bit-width, on the host; under tracing
  (``nnx.eval_shape``) the same formula in jnp.
  """
  if isinstance(w, jax.core.Tracer):
    mean_abs = jnp.abs(w).reshape(w.shape[0], -1, w.shape[-1]).mean(axis=1)  # (G, c_out)
    steps = [2.0 * mean_abs / math.sqrt(weight_qrange(b)[1]) for b in bits]
    return jnp.maximum(jnp.stack(steps, axis=1), 1e-6)
  kernels = np.asarray(w)
  return jnp.asarray(np.stack([[init_weight_step(k, b) for b in bits] for k in kernels]))


def init_act_steps(x: jax.Array, bits: Sequence[int]) -> jax.Array:
  """LSQ initial steps ``(G, Ba)`` of the G quantizers of ``(N, H, W, G, c)``: 2·mean|x|/√Q_P.

  The formula of :func:`quant.init_act_step` per group, in jnp so that calibration runs jitted.
  """
  mean_abs = jnp.abs(x).mean(axis=(0, 1, 2, 4))  # (G,)
  steps = [2.0 * mean_abs / math.sqrt(act_qrange(b)[1]) for b in bits]
  return jnp.maximum(jnp.stack(steps, axis=1), 1e-4)


def he_normal(key: jax.Array, shape: Sequence[int], fan_in: int) -> jax.Array:
  """He-normal N(0, 2/fan_in) weights, drawn on the host by numpy's generator seeded with
  ``key``'s data (no XLA compilation per shape: drawing a 3-cell network's ~200 kernels with
  ``jax.random`` compiled for 58 s under ``jit``). Under tracing, ``jax.random.normal`` gives
  the shape."""
  std = np.sqrt(2.0 / fan_in)
  if isinstance(key, jax.core.Tracer):
    return jax.random.normal(key, tuple(shape)) * std
  rng = np.random.default_rng(np.asarray(jax.random.key_data(key)))
  return jnp.asarray(rng.standard_normal(tuple(shape), dtype=np.float32) * np.float32(std))


def out_size(size: int, stride: int) -> int:
  """Spatial output size of every op here: ⌈size / stride⌉ (PyTorch's k//2·d padding)."""
  return -(-size // stride)


def _shift_correlate(
  xp: jax.Array, kernel: jax.Array, stride: int, dilation: int, out_hw: tuple[int, int]
) -> jax.Array:
  """y[o] = Σ_t xp[o·s + t·d]·kernel[t] over both spatial axes, on an already padded input."""
  n, _, _, c = xp.shape
  (ho, wo), k = out_hw, kernel.shape[0]
  y = 0.0
  for i in range(k):
    for j in range(k):
      start = (0, i * dilation, j * dilation, 0)
      limit = (n, start[1] + (ho - 1) * stride + 1, start[2] + (wo - 1) * stride + 1, c)
      y = y + jax.lax.slice(xp, start, limit, (1, stride, stride, 1)) * kernel[i, j]
  return y


def materialize(y: jax.Array, witness: jax.Array) -> jax.Array:
  """``y``, computed once and stored: a ``cond`` on a runtime predicate that XLA cannot fold.

  XLA:CPU duplicates cheap elementwise producers into every consumer fusion; a 25-tap shifted
  sum then appears ~9 times in the sep-conv stack's program (compile time and run time). A
  conditional's output cannot be fused into its users (``optimization_barrier`` is removed on
  CPU, and a ``cond`` with identical branches is folded). The predicate w > −∞ holds unless
  ``witness`` (a scalar of the same computation) is NaN or −∞; the other branch then returns
  NaN, as the computation would.
  """
  w = jax.lax.stop_gradient(witness.reshape(-1)[0])
  return jax.lax.cond(w > -jnp.inf, lambda v: v, lambda v: v + w * 0.0, y)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int, dilation: int) -> jax.Array:
  """Depthwise k×k convolution as Σ_{i,j} shift_{i,j}(x)·kernel[i, j].

  Padding is PyTorch's symmetric d·(k−1)/2, so the output is ⌈H/s⌉ × ⌈W/s⌉. The input
  gradient is the same kind of shifted sum (of the zero-upsampled gradient, with the flipped
  kernel); the kernel gradient is one variadic reduction (autodiff of the shifted sum gives
  k² separate reductions, which tripled the compile time of the search network).

  Args:
    x: ``(N, H, W, C)``.
    kernel: ``(k, k, C)`` (odd k).
    stride, dilation: static ints.
  """
  pad = dilation * (kernel.shape[0] - 1) // 2
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  out_hw = (out_size(x.shape[1], stride), out_size(x.shape[2], stride))
  return materialize(_shift_correlate(xp, kernel, stride, dilation, out_hw), kernel)


def _depthwise_fwd(x, kernel, stride, dilation):
  return depthwise_conv(x, kernel, stride, dilation), (x, kernel)


def _depthwise_bwd(stride, dilation, res, g):
  x, kernel = res
  pad = dilation * (kernel.shape[0] - 1) // 2
  _, h, w, _ = x.shape
  ho, wo = g.shape[1:3]
  # dx[i] = Σ_t g↑[i + p − t·d]·k[t], g↑ the gradient with s − 1 zeros between rows/columns
  config = [
    (0, 0, 0),
    (pad, h + pad - ((ho - 1) * stride + 1), stride - 1),
    (pad, w + pad - ((wo - 1) * stride + 1), stride - 1),
    (0, 0, 0),
  ]
  gp = jax.lax.pad(g, jnp.zeros((), g.dtype), config)
  dx = materialize(_shift_correlate(gp, kernel[::-1, ::-1], 1, dilation, (h, w)), kernel)
  return dx, _depthwise_kernel_grad(x, g, kernel.shape[0], stride, dilation)


def _depthwise_kernel_grad(x, g, k: int, stride: int, dilation: int) -> jax.Array:
  """∂kernel[i, j] = Σ_{n,h,w} shift_{i,j}(x)·g: the k² sums in one variadic reduction.

  One pass over the data; faster than XLA:CPU's depthwise weight-gradient convolution
  (74 ms against 107 ms on 64×32×32×64), which inside a ``lax.scan`` body runs ~70× slower.
  """
  pad = dilation * (k - 1) // 2
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  n, ho, wo, c = g.shape
  terms = []
  for i in range(k):
    for j in range(k):
      start = (0, i * dilation, j * dilation, 0)
      limit = (n, start[1] + (ho - 1) * stride + 1, start[2] + (wo - 1) * stride + 1, c)
      terms.append(jax.lax.slice(xp, start, limit, (1, stride, stride, 1)) * g)
  return jnp.stack(sum_to_shape(terms, (c,))).reshape(k, k, c)


depthwise_conv.defvjp(_depthwise_fwd, _depthwise_bwd)


def pointwise_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Grouped 1×1 convolution: ``(N, H, W, G, c_in)`` × ``(G, c_in, c_out)`` → ``(N, H, W, G,
  c_out)``."""
  return jnp.einsum("nhwgc,gcd->nhwgd", x, kernel)


@jax.custom_vjp
def batch_norm(x: jax.Array) -> jax.Array:
  """Affine-free batch normalization over (N, H, W) with the batch's biased variance.

  y = (x − μ)/√(σ² + ε). The statistics come from one variadic reduction (Σx, Σx²), and the
  backward pass, ∂x = (g − mean(g) − y·mean(g·y))/√(σ² + ε), from another: two passes over
  the data each way instead of autodiff's four or five.
  """
  return _batch_norm_fwd(x)[0]


def _batch_norm_fwd(x):
  count = math.prod(x.shape[:3])
  total, squares = sum_to_shape([x, jnp.square(x)], (1, 1, 1, *x.shape[3:]))
  mean = total / count
  inv = jax.lax.rsqrt(jnp.maximum(squares / count - jnp.square(mean), 0.0) + BN_EPS)
  y = (x - mean) * inv
  return y, (y, inv)


def _batch_norm_bwd(res, g):
  y, inv = res
  count = math.prod(y.shape[:3])
  g_sum, gy_sum = sum_to_shape([g, g * y], inv.shape)
  return ((g - g_sum / count - y * (gy_sum / count)) * inv,)


batch_norm.defvjp(_batch_norm_fwd, _batch_norm_bwd)


def max_pool_3x3(x: jax.Array, stride: int) -> jax.Array:
  """3×3 max pool, padding 1 (−∞), stride 1 or 2; ``(N, H, W, C)`` → ``(N, ⌈H/s⌉, ⌈W/s⌉, C)``."""
  window, strides = (1, 3, 3, 1), (1, stride, stride, 1)
  return jax.lax.reduce_window(
    x, -jnp.inf, jax.lax.max, window, strides, ((0, 0), (1, 1), (1, 1), (0, 0))
  )


def avg_pool_3x3(x: jax.Array, stride: int) -> jax.Array:
  """3×3 average pool, padding 1, padded cells not counted (PyTorch count_include_pad=False)."""
  window, strides, pad = (1, 3, 3, 1), (1, stride, stride, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, pad)
  ones = np.ones((1, *x.shape[1:3], 1), np.float32)
  count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, strides, pad)
  return total / count


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2×2 max pool, stride 2: the bypass of the partial channels on reduction edges."""
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
  """PC-DARTS channel shuffle: channel g·(C/groups) + j moves to j·groups + g."""
  *lead, c = x.shape
  return x.reshape(*lead, groups, c // groups).swapaxes(-1, -2).reshape(*lead, c)


def subsample_pair(x: jax.Array) -> jax.Array:
  """The two inputs of a factorized reduce, ``x[::2, ::2]`` and ``x[1::2, 1::2]``, stacked.

  ``(N, H, W, ...)`` with even H, W → ``(N, H/2, W/2, 2, ...)``.
  """
  return jnp.stack([x[:, 0::2, 0::2], x[:, 1::2, 1::2]], axis=3)


# --- modules --------------------------------------------------------------------------------


class BatchNorm(nnx.Module):
  """Batch normalization over (N, H, W) of ``(N, H, W, *feature_shape)``.

  Args:
    feature_shape: shape of the normalized features (e.g. ``(G, c)`` or ``(C,)``).
    affine: learnable scale and bias (``nnx.Param``).
    running: keep running mean and variance as ``nnx.BatchStat`` (PyTorch's momentum 0.1,
      unbiased variance). In training mode (``use_running_average`` False, set by
      ``Module.train()``) the batch statistics normalize and the running ones are updated; in
      evaluation mode (``Module.eval()``) the running ones normalize. Without ``running`` the
      batch statistics always normalize and the module holds no state besides its Params.
  """

  def __init__(self, feature_shape: Sequence[int], *, affine: bool, running: bool = False):
    shape = tuple(feature_shape)
    self.scale = nnx.Param(jnp.ones(shape)) if affine else None
    self.bias = nnx.Param(jnp.zeros(shape)) if affine else None
    self.mean = nnx.BatchStat(jnp.zeros(shape)) if running else None
    self.var = nnx.BatchStat(jnp.ones(shape)) if running else None
    self.use_running_average = False
    self.momentum = 0.1

  def __call__(self, x: jax.Array, acc_step: jax.Array | None = None) -> jax.Array:
    """``acc_step``: the step of ``x``'s accumulator grid (s_in·s_w[c], broadcastable to the
    features), given where the conv before has fixed bits. In evaluation mode the BN is then
    the folded affine map ``x·f + b̂`` with f = γ/√(σ² + ε) and b̂ = β − μ·f rounded to the
    folded accumulator grid ``acc_step·|f|``: the int32 bias an integer runtime adds."""
    if self.mean is not None and self.use_running_average:
      return self._folded(x, acc_step)
    if self.mean is not None:
      self._update_running(x)
    y = batch_norm(x)
    if self.scale is not None:
      y = y * self.scale[...] + self.bias[...]
    return y

  def _folded(self, x: jax.Array, acc_step: jax.Array | None) -> jax.Array:
    f = jax.lax.rsqrt(self.var[...] + BN_EPS)
    if self.scale is not None:
      f = f * self.scale[...]
    bias = -self.mean[...] * f + (self.bias[...] if self.bias is not None else 0.0)
    if acc_step is not None:
      grid = jax.lax.stop_gradient(acc_step * jnp.abs(f))
      bias = grid * jnp.round(bias / grid)
    return x * f + bias

  def _update_running(self, x: jax.Array) -> None:
    count = math.prod(x.shape[:3])
    mean = x.mean(axis=(0, 1, 2))
    var = jnp.square(x - mean).mean(axis=(0, 1, 2)) * count / max(count - 1, 1)
    m = self.momentum
    self.mean[...] = (1 - m) * self.mean[...] + m * jax.lax.stop_gradient(mean)
    self.var[...] = (1 - m) * self.var[...] + m * jax.lax.stop_gradient(var)


class ActQuant(nnx.Module):
  """G bit-mixed activation quantizers (one per group), see :func:`mix_act_groups`."""

  def __init__(self, groups: int, a_bits: Sequence[int]):
    self.a_bits = tuple(a_bits)
    self.steps = QScale(jnp.ones((groups, len(self.a_bits))))  # (G, Ba), set by calibration

  def __call__(self, x: jax.Array, probs: jax.Array, calibrate: bool = False) -> jax.Array:
    """``x``: ``(N, H, W, G, c)``; ``probs``: ``(G, Ba)``."""
    if calibrate:
      self.calibrate(x)
    return mix_act_groups(x, self.steps[...], probs, self.a_bits)

  def calibrate(self, x: jax.Array) -> None:
    """Sets the LSQ initial steps of each group from its input (:func:`init_act_steps`)."""
    self.steps[...] = init_act_steps(jax.lax.stop_gradient(x), self.a_bits)


def _acc_step(act: "ActQuant", kernels: "QKernels") -> jax.Array | None:
  """``(G, c_out)`` accumulator steps s_in[g]·s_w[g, c] of G convs with fixed bits; None for
  bit-mixed ones (the search network, whose BN never folds)."""
  if len(act.a_bits) != 1 or len(kernels.w_bits) != 1:
    return None
  return act.steps[...][:, 0, None] * kernels.steps[...][:, 0, :]


class QKernels(nnx.Module):
  """G stacked kernels ``(G, ..., c_out)`` with per-output-channel bit-mixed LSQ steps."""

  def __init__(self, shape: Sequence[int], fan_in: int, w_bits: Sequence[int], *, rngs: nnx.Rngs):
    kernel = he_normal(rngs.params(), shape, fan_in)
    self.w_bits = tuple(w_bits)
    self.kernel = nnx.Param(kernel)
    self.steps = QScale(init_weight_steps(kernel, self.w_bits))  # (G, Bw, c_out)

  def __call__(self, probs: jax.Array) -> jax.Array:
    """``probs``: ``(G, Bw)`` → the mixed kernels W̃."""
    return mix_weight_groups(self.kernel[...], self.steps[...], probs, self.w_bits)


class DwPwStack(nnx.Module):
  """E edges × O ops of ``[ReLU → dw k_o×k_o (dilation d) → pw 1×1 → BN] × repeats``.

  ``repeats=2``, d=1 is DARTS's ``sep_conv_k`` (the first dw has the edge's stride, the second
  stride 1); ``repeats=1``, d=2 is ``dil_conv_k``. The O ops of one stack differ only in k:
  their depthwise kernels are zero-embedded into the largest k and run as one depthwise conv
  over E·O·c channels. Every conv quantizes its input (bit-mixed) and its kernel; the convs of
  one (edge, op) share that op's bit probabilities.

  .. note:: The pointwise conv's input (a depthwise output) is quantized unsigned like every
    quantized input in qdarts, which clips it at 0: an implicit ReLU between dw and pw, as in
    the ∇QDARTS reference, whose HWGQ activation quantizer clamps there too.
  """

  def __init__(
    self,
    n_edges: int,
    kernels: Sequence[int],
    *,
    channels: int,
    stride: int,
    dilation: int,
    repeats: int,
    w_bits: Sequence[int],
    a_bits: Sequence[int],
    affine: bool,
    running: bool = False,
    rngs: nnx.Rngs,
  ):
    e, c, o = n_edges, channels, len(kernels)
    self.kernels, self.stride, self.dilation, self.repeats = (
      tuple(kernels),
      stride,
      dilation,
      repeats,
    )
    self.n_edges, self.channels = e, c
    self.dw = nnx.List(
      [
        nnx.List([QKernels((e, k, k, c), k * k, w_bits, rngs=rngs) for k in self.kernels])
        for _ in range(repeats)
      ]
    )
    self.pw = nnx.List([QKernels((e * o, c, c), c, w_bits, rngs=rngs) for _ in range(repeats)])
    self.dw_act = nnx.List([ActQuant(e * o, a_bits) for _ in range(repeats)])
    self.pw_act = nnx.List([ActQuant(e * o, a_bits) for _ in range(repeats)])
    self.bn = nnx.List(
      [BatchNorm((e * o, c), affine=affine, running=running) for _ in range(repeats)]
    )

  def __call__(
    self, x: jax.Array, w_probs: jax.Array, a_probs: jax.Array, calibrate: bool = False
  ) -> jax.Array:
    """``x``: ``(N, H, W, E, c)`` ReLU'd inputs; ``w_probs`` ``(E, O, Bw)``, ``a_probs`` ``(E, O,
    Ba)``. Returns ``(N, ⌈H/s⌉, ⌈W/s⌉, E, O, c)``."""
    e, o, c = self.n_edges, len(self.kernels), self.channels
    wp, ap = w_probs.reshape(e * o, -1), a_probs.reshape(e * o, -1)
    n = x.shape[0]
    x = jnp.broadcast_to(x[:, :, :, :, None, :], (*x.shape[:4], o, c)).reshape(
      *x.shape[:3], e * o, c
    )
    for r in range(self.repeats):
      if r:
        x = jax.nn.relu(x)
      x = self.dw_act[r](x, ap, calibrate)
      kernel = self._depthwise_kernel(r, w_probs)  # (k, k, E·O·c)
      stride = self.stride if r == 0 else 1
      x = depthwise_conv(x.reshape(*x.shape[:3], -1), kernel, stride, self.dilation)
      x = x.reshape(n, *x.shape[1:3], e * o, c)
      x = self.pw_act[r](x, ap, calibrate)
      x = self.bn[r](pointwise_conv(x, self.pw[r](wp)), _acc_step(self.pw_act[r], self.pw[r]))
    return x.reshape(*x.shape[:3], e, o, c)

  def _depthwise_kernel(self, r: int, w_probs: jax.Array) -> jax.Array:
    kmax = max(self.kernels)
    mixed = []
    for i, (k, qk) in enumerate(zip(self.kernels, self.dw[r], strict=True)):
      pad = (kmax - k) // 2
      mixed.append(jnp.pad(qk(w_probs[:, i]), ((0, 0), (pad, pad), (pad, pad), (0, 0))))
    stacked = jnp.stack(mixed, axis=1)  # (E, O, k, k, c)
    return stacked.transpose(2, 3, 0, 1, 4).reshape(kmax, kmax, -1)


class FactorizedReduceStack(nnx.Module):
  """G factorized reduces (DARTS): two 1×1 stride-2 convs c_in → c_out/2 on ``x[::2, ::2]``
  and ``x[1::2, 1::2]``, concatenated, then BN. Both convs share the group's bits.

  The skip op of a stride-2 edge (stacked over edges) and the fixed 8-bit preprocess of the
  cell after a reduction (G=1).
  """

  def __init__(
    self,
    groups: int,
    cin: int,
    cout: int,
    *,
    w_bits: Sequence[int],
    a_bits: Sequence[int],
    affine: bool,
    running: bool = False,
    rngs: nnx.Rngs,
  ):
    self.groups, self.cin, self.cout = groups, cin, cout
    self.conv = QKernels((groups * 2, cin, cout // 2), cin, w_bits, rngs=rngs)
    self.act = ActQuant(groups * 2, a_bits)
    self.bn = BatchNorm((groups, cout), affine=affine, running=running)

  def __call__(
    self, x: jax.Array, w_probs: jax.Array, a_probs: jax.Array, calibrate: bool = False
  ) -> jax.Array:
    """``x``: ``(N, H, W, G, c_in)`` ReLU'd; probs ``(G, B)`` → ``(N, H/2, W/2, G, c_out)``."""
    pair = subsample_pair(x)  # (N, H/2, W/2, 2, G, cin)
    pair = pair.swapaxes(3, 4).reshape(*pair.shape[:3], self.groups * 2, self.cin)
    wp, ap = jnp.repeat(w_probs, 2, axis=0), jnp.repeat(a_probs, 2, axis=0)
    y = pointwise_conv(self.act(pair, ap, calibrate), self.conv(wp))  # (N, h, w, 2G, cout/2)
    acc = _acc_step(self.act, self.conv)
    acc = None if acc is None else acc.reshape(self.groups, self.cout)
    return self.bn(y.reshape(*y.shape[:3], self.groups, self.cout), acc)


class ReLUConvBN(nnx.Module):
  """ReLU → quantized 1×1 conv c_in → c_out → BN: the preprocess of a cell's inputs."""

  def __init__(
    self,
    cin: int,
    cout: int,
    *,
    w_bits: Sequence[int],
    a_bits: Sequence[int],
    affine: bool,
    running: bool = False,
    rngs: nnx.Rngs,
  ):
    self.cin, self.cout = cin, cout
    self.conv = QKernels((1, cin, cout), cin, w_bits, rngs=rngs)
    self.act = ActQuant(1, a_bits)
    self.bn = BatchNorm((cout,), affine=affine, running=running)

  def __call__(
    self, x: jax.Array, w_probs: jax.Array, a_probs: jax.Array, calibrate: bool = False
  ) -> jax.Array:
    """``x``: ``(N, H, W, c_in)``; probs ``(1, B)`` → ``(N, H, W, c_out)``."""
    xq = self.act(jax.nn.relu(x)[:, :, :, None, :], a_probs, calibrate)
    acc = _acc_step(self.act, self.conv)
    return self.bn(pointwise_conv(xq, self.conv(w_probs))[:, :, :, 0, :], acc)


class QuantHead(nnx.Module):
  """Global average pool of an 8-bit quantized input, then an 8-bit linear classifier.

  The same computation as ``QAvgPool`` + ``QDense`` of :mod:`search_spaces.ops` (the bias on
  the accumulator grid), with traceable initialisers (``nnx.eval_shape``). ``(N, H, W, C)`` →
  logits ``(N, num_classes)``.

  .. note:: The unsigned 8-bit quantizer before the pool clips the last cell's (signed) output
    at 0, a ReLU before the global pool that the reference (fp32 classifier) does not have.
  """

  def __init__(self, cin: int, cout: int, *, bits: int = 8, rngs: nnx.Rngs):
    self.cin, self.cout = cin, cout
    self.pool_act = ActQuant(1, (bits,))
    self.fc_act = ActQuant(1, (bits,))
    self.fc = QKernels((1, cin, cout), cin, (bits,), rngs=rngs)
    self.bias = nnx.Param(jnp.zeros((cout,)))

  def __call__(self, x: jax.Array, calibrate: bool = False) -> jax.Array:
    one = jnp.ones((1, 1))
    pooled = self.pool_act(x[:, :, :, None, :], one, calibrate).mean(axis=(1, 2))[:, 0]
    xq = self.fc_act(pooled[:, None, None, None, :], one, calibrate)[:, 0, 0, 0]
    bias = fixed_bias(self.bias[...], self.fc.steps[...][0], self.fc_act.steps[...][0], 1, 1)
    return xq @ self.fc(one)[0] + bias
