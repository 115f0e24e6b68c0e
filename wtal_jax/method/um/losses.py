"""The three UM losses (SPEC §3). Each returns per-video values of shape (B,); callers reduce.

Release behaviour is the default; the paper's equations are available as ``variant='paper'``.
"""

import jax
import jax.numpy as jnp

_LOG_CLAMP = -100.0  # PyTorch's BCELoss clamps each log at -100.
# Below this argument a log's derivative (1/x) is about to overflow float32; torch's gradient
# there vanishes after the softmax anyway (it is multiplied by p ~ 0).
_TINY = 1e-30


def _clamped_log(x: jax.Array, *, one_minus: bool = False) -> jax.Array:
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
    log_p = _clamped_log(probs)
    log_q = _clamped_log(probs, one_minus=True)
    return -(targets * log_p + (1.0 - targets) * log_q)


def classification_loss(*, p_act: jax.Array, labels: jax.Array,
                        variant: str = 'release') -> jax.Array:
    """Video classification loss, (B, C) scores and multi-hot labels -> (B,).

    release: BCE between p_act and y_hat, averaged over classes (the mean of these per-video values
      over videos is torch's BCELoss mean over B x C entries).
    paper (Eq. 6): -sum_c y_hat_c log p_act_c.
    """
    targets = normalize_labels(labels)
    if variant == 'release':
        return jnp.mean(binary_cross_entropy(p_act, targets), axis=-1)
    if variant == 'paper':
        return -jnp.sum(targets * _clamped_log(p_act), axis=-1)
    raise ValueError(f'unknown classification loss variant {variant!r}')


def uncertainty_loss(*, feat_act: jax.Array, feat_bkg: jax.Array, margin: float) -> jax.Array:
    """Uncertainty modelling loss (Eq. 7) per video: (max(0, m - |f_act|) + |f_bkg|)^2.

    feat_act, feat_bkg: (B, E) means of the pseudo action / background embeddings -> (B,).
    """
    act = jax.nn.relu(margin - jnp.linalg.norm(feat_act, axis=-1))
    bkg = jnp.linalg.norm(feat_bkg, axis=-1)
    return jnp.square(act + bkg)


def background_entropy_loss(*, p_bkg: jax.Array, bkg_softmax: jax.Array,
                            variant: str = 'release') -> jax.Array:
    """Background entropy loss per video, -> (B,).

    release: BCE between p_bkg (B, C) and the uniform target 1/C, averaged over classes.
    paper (Eq. 8): -(1/C) sum_c log of bkg_softmax (B, C), the mean segment softmax over the
      pseudo background segments.
    """
    num_classes = p_bkg.shape[-1]
    if variant == 'release':
        return jnp.mean(binary_cross_entropy(p_bkg, jnp.full_like(p_bkg, 1.0 / num_classes)),
                        axis=-1)
    if variant == 'paper':
        return -jnp.mean(_clamped_log(bkg_softmax), axis=-1)
    raise ValueError(f'unknown background entropy loss variant {variant!r}')


def total_loss(*, cls: jax.Array, um: jax.Array, be: jax.Array,
               alpha: float, beta: float) -> jax.Array:
    """Eq. 5 per video: L = L_cls + alpha * L_um + beta * L_be."""
    return cls + alpha * um + beta * be
