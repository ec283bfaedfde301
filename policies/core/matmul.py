"""The decoder's dense layers: ``x[..., in] @ w[in, out]``, in full or mixed precision.

Mixed precision is what PyTorch's bf16 autocast and a TPU's default precision do:
the operands are rounded to bfloat16, the products are accumulated and returned
in float32, and everything around the matmuls (norms, softmax, residuals, the
optimizer) stays float32. On CPUs with AVX512-BF16 and on GPUs these matmuls run
about twice as fast as float32 ones.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

_MATMUL = (((1,), (0,)), ((), ()))        # [N, in] x [in, out]
_MATMUL_BT = (((1,), (1,)), ((), ()))     # [N, out] x [in, out]^T


def dense(x, w_IxO, dt, operand_dtype=None):
  """``x[..., in] @ w[in, out]`` in dtype ``dt``; with ``operand_dtype`` (e.g.
  bfloat16, for float32 ``x``) the operands are rounded to it and accumulated in
  float32 (``mixed_matmul``).

  The matmul is 2-D: XLA's CPU backend runs rank-3 dots far slower than the same
  work flattened to a matrix.
  """
  if operand_dtype is not None and jnp.dtype(operand_dtype) != jnp.dtype(dt):
    if jnp.dtype(dt) != jnp.float32:
      raise ValueError(f"mixed-precision matmuls take float32 activations, not {dt}")
    return mixed_matmul(x, w_IxO, jnp.dtype(operand_dtype))
  lead = x.shape[:-1]
  y = x.reshape(-1, x.shape[-1]) @ w_IxO.astype(dt)
  return y.reshape(lead + (w_IxO.shape[1],))


def mixed_matmul(x, w_IxO, operand_dtype):
  """float32 ``x[..., in] @ w[in, out]`` with operands rounded to ``operand_dtype``
  and float32 accumulation, forward and backward."""
  return _mixed(x, w_IxO, operand_dtype, False)


def mixed_matmul_bt(x, w_OxI, operand_dtype):
  """``mixed_matmul`` with the weight stored ``[out, in]`` (a tied embedding as the output
  layer), contracted on its own axis, so no transposed copy of the embedding is made.
  Before, the output layer stayed float32 in mixed precision: at SmolLM2's 49k vocabulary
  it was a tenth of a CPU decoding step (``jax.profiler``)."""
  return _mixed(x, w_OxI, operand_dtype, True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _mixed(x, w, operand_dtype, transposed):
  return _mixed_forward(x, w, operand_dtype, transposed)[0]


def _mixed_forward(x, w, operand_dtype, transposed):
  x_low, w_low = x.astype(operand_dtype), w.astype(operand_dtype)
  y = lax.dot_general(x_low.reshape(-1, x.shape[-1]), w_low,
                      _MATMUL_BT if transposed else _MATMUL, preferred_element_type=jnp.float32)
  return y.reshape(x.shape[:-1] + (w.shape[0 if transposed else 1],)), (x_low, w_low)


def _mixed_backward(operand_dtype, transposed, residuals, g):
  x_low, w_low = residuals
  g_low = g.astype(operand_dtype)
  dx = lax.dot_general(g_low.reshape(-1, g.shape[-1]), w_low,
                       _MATMUL if transposed else _MATMUL_BT,
                       preferred_element_type=jnp.float32).reshape(x_low.shape)
  # dW contracts over every leading axis of the unflattened arrays: from a 2-D
  # [N, in] operand XLA makes the transpose a layout change, its CPU bf16 dot
  # then rejects that layout and silently computes in float32, 2x slower.
  lead = tuple(range(x_low.ndim - 1))
  pair = (g_low, x_low) if transposed else (x_low, g_low)
  dw = lax.dot_general(*pair, ((lead, lead), ((), ())), preferred_element_type=jnp.float32)
  return dx, dw


_mixed.defvjp(_mixed_forward, _mixed_backward)
