"""Pieces every method shares, in JAX: the releases' PyTorch-default initialisation, compute
dtypes, PyTorch's BCELoss with its clamped logs, and the mean of the top k over time.
"""

import math

import jax
import jax.numpy as jnp

# model.dtype -> the dtype the networks compute in (parameters stay float32).
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}

def torch_uniform_init(fan_in: int):
    """PyTorch's default Conv1d initialiser: uniform in ±1/sqrt(fan_in) (SPEC §2, [release]).

    ``kaiming_uniform_(a=sqrt(5))`` gives the same bound for weights; biases use it directly.
    """
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


# ---------------------------------------------------------------------------------------------
# Losses


_LOG_CLAMP = -100.0  # PyTorch's BCELoss clamps each log at -100.


# Below this argument a log's derivative (1/x) is about to overflow float32; torch's gradient
# there vanishes after the softmax anyway (it is multiplied by p ~ 0).
_TINY = 1e-30


def clamped_log(x: jax.Array, *, one_minus: bool = False) -> jax.Array:
    """max(log(x), -100) (or of log(1 - x)), with a zero gradient, not NaN, where x ~ 0.

    ``jnp.maximum(jnp.log(0), -100)`` has the right value but a NaN gradient (0 * inf), which
    a single video with an underflowed softmax (or a masked, padded one) spreads to every
    parameter. Values are exactly the clamped logs.
    """
    x = jnp.asarray(x)  # the test below must see the value the logs will see
    arg = 1.0 - x if one_minus else x
    small = arg < _TINY
    log = (lambda v: jnp.log1p(-v)) if one_minus else jnp.log
    safe = jnp.where(small, 0.0 if one_minus else 1.0, x)
    clamped = jax.lax.stop_gradient(jnp.maximum(log(x), _LOG_CLAMP))
    return jnp.where(small, clamped, log(safe))


def normalize_labels(labels: jax.Array) -> jax.Array:
    """y_hat = y / sum_c y_c per video, (B, C) -> (B, C); an all-zero row stays zero."""
    total = jnp.sum(labels, axis=-1, keepdims=True)
    return labels / jnp.where(total > 0, total, 1.0)


def binary_cross_entropy(probs: jax.Array, targets: jax.Array) -> jax.Array:
    """Element-wise -(y log p + (1-y) log(1-p)) with each log clamped at -100, as torch's BCELoss."""
    log_p = clamped_log(probs)
    log_q = clamped_log(probs, one_minus=True)
    return -(targets * log_p + (1.0 - targets) * log_q)


# ---------------------------------------------------------------------------------------------
# Top k over time


def num_selected(num_segments, ratio: int):
    """k = floor(T / r), at least 1 so that a video shorter than r segments has no empty mean.

    Works on a Python int (a static k) and on an integer array of lengths (per-video k).
    """
    if isinstance(num_segments, int):
        return max(num_segments // ratio, 1)
    return jnp.maximum(num_segments // ratio, 1)


def topk_weights(values: jax.Array, k_max: int, k: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Indices of the ``k_max`` largest entries along the last axis, and mean weights.

    Args:
      values: (..., T); entries that must never be chosen are -inf.
      k_max: static number of candidates (the largest k of any video in the batch).
      k: (...,) the number actually averaged per row, k <= k_max.
    Returns:
      indices (..., k_max) int32 in descending value order (ties: lower index first), and
      weights (..., k_max) equal to 1/k on the first k ranks and 0 after, so that
      ``sum(weights * x[indices])`` is the mean over the top k.
    """
    _, indices = jax.lax.top_k(values, k_max)
    ranks = jnp.arange(k_max)
    weights = (ranks < k[..., None]).astype(values.dtype) / k[..., None].astype(values.dtype)
    return indices, weights


def weighted_gather(x: jax.Array, indices: jax.Array, weights: jax.Array) -> jax.Array:
    """Weighted sum over selected time steps: x (B, T, X), indices/weights (B, K) -> (B, X)."""
    picked = jnp.take_along_axis(x, indices[..., None], axis=1)
    return jnp.einsum('bk,bkx->bx', weights, picked)
