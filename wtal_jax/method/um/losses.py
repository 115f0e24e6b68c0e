"""The three UM losses (SPEC §3). Each returns per-video values of shape (B,); callers reduce.

Release behaviour is the default; the paper's equations are available as ``variant='paper'``.
"""

import jax
import jax.numpy as jnp

from wtal_jax.method.common import binary_cross_entropy, clamped_log, normalize_labels


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
        return -jnp.sum(targets * clamped_log(p_act), axis=-1)
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
        return -jnp.mean(clamped_log(bkg_softmax), axis=-1)
    raise ValueError(f'unknown background entropy loss variant {variant!r}')


def total_loss(*, cls: jax.Array, um: jax.Array, be: jax.Array,
               alpha: float, beta: float) -> jax.Array:
    """Eq. 5 per video: L = L_cls + alpha * L_um + beta * L_be."""
    return cls + alpha * um + beta * be


def cls_scale(mode: str, num_classes: int) -> float:
    """The factor on L_cls: 1 (the release), or C for ``'classes'``.

    The release's L_cls averages a BCE over the C classes, so its weight against L_um and L_be
    (tuned on THUMOS'14, C = 20) shrinks by 5x or 10x on ActivityNet (C = 100 or 200);
    ``'classes'`` undoes that average (a sum over classes).
    """
    return float(num_classes) if mode == 'classes' else 1.0


def per_video_losses(sel, labels: jax.Array, *, hp) -> dict[str, jax.Array]:
    """``METHOD.losses``: the three losses and their weighted total (Eq. 5), each (B,).

    ``sel``: the :class:`~wtal_jax.method.um.selection.Selection` of a training pass (with
    the pseudo segments' mean embeddings); ``labels`` (B, C) multi-hot.
    """
    l = hp.loss
    cls = cls_scale(l.cls_scale, labels.shape[-1]) * classification_loss(
        p_act=sel.p_act, labels=labels, variant=l.cls_variant)
    um = uncertainty_loss(feat_act=sel.feat_act, feat_bkg=sel.feat_bkg, margin=l.margin)
    be = background_entropy_loss(p_bkg=sel.p_bkg, bkg_softmax=sel.bkg_softmax,
                                 variant=l.be_variant)
    total = total_loss(cls=cls, um=um, be=be, alpha=l.alpha, beta=l.beta)
    return {'loss': total, 'loss_cls': cls, 'loss_um': um, 'loss_be': be}
