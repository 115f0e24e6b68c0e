"""The BaS-Net losses (SPEC §8.4; the release's train.py: BaS_Net_loss), per video, (B,).

L = L_base + L_supp + alpha * L_norm: the base branch is trained to see the background class
in every video, the suppression branch to see none, and the filter's weights are kept sparse.
"""

import jax
import jax.numpy as jnp

from wtal_jax.method.common import binary_cross_entropy, normalize_labels


def branch_labels(labels: jax.Array, *, background: bool) -> jax.Array:
    """``[y, 1] / sum`` (base branch) or ``[y, 0] / sum`` (suppression branch): (B, C) -> (B, C+1).

    A video without labels keeps an all-zero suppression target (the release divides 0 by 0).
    """
    extra = jnp.full(labels.shape[:-1] + (1,), 1.0 if background else 0.0, labels.dtype)
    return normalize_labels(jnp.concatenate([labels, extra], axis=-1))


def branch_loss(probs: jax.Array, targets: jax.Array) -> jax.Array:
    """nn.BCELoss on the softmax scores, its mean over the C+1 classes: (B, C+1) -> (B,).

    The mean over videos of these is BCELoss's mean over all B x (C+1) entries.
    """
    return jnp.mean(binary_cross_entropy(probs, targets), axis=-1)


def norm_loss(weights: jax.Array) -> jax.Array:
    """The L1 norm of the foreground weights over time, not divided by T: (B, T) -> (B,).

    ``torch.norm(w, p=1, dim=1)``; the weights are sigmoids, so it is their sum.
    """
    return jnp.sum(jnp.abs(weights), axis=-1)


def per_video_losses(outputs: dict, labels: jax.Array, *, hp) -> dict[str, jax.Array]:
    """``METHOD.losses``: the two branch losses, the norm loss and their weighted total, (B,)."""
    base = branch_loss(outputs['p_base'], branch_labels(labels, background=True))
    supp = branch_loss(outputs['p_supp'], branch_labels(labels, background=False))
    norm = norm_loss(outputs['weights'])
    return {'loss': base + supp + hp.loss.alpha * norm, 'loss_base': base, 'loss_supp': supp,
            'loss_norm': norm}
