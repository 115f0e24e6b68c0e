"""Magnitude-based uncertainty and pseudo action/background selection (SPEC §2, items 3-9).

Pure, jit-able functions of the network outputs. Videos may be padded along time: ``lengths``
gives each video's true number of segments T', and every top-k, mean and maximum here looks
only at positions ``t < T'`` with its own ``k = max(1, T' // r)``, so padding never leaks in.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from wtal_jax.method.common import num_selected, topk_weights, weighted_gather


def feature_magnitudes(features: jax.Array) -> jax.Array:
    """L2 norm over the embedding channels: (B, T, E) -> (B, T)."""
    return jnp.sqrt(jnp.sum(jnp.square(features), axis=-1))


def uncertainty(magnitudes: jax.Array, margin: float) -> jax.Array:
    """Probability of being an action from the feature magnitude (Eq. 4): min(m, |f|) / m."""
    return jnp.minimum(magnitudes, margin) / margin


def segment_softmax(cas: jax.Array) -> jax.Array:
    """Segment-level class probabilities: softmax of A over classes, (B, T, C) -> (B, T, C)."""
    return jax.nn.softmax(cas, axis=-1)


def selection_mask(key: jax.Array, shape: tuple[int, ...], rate: float) -> jax.Array:
    """The release's dropout mask on magnitudes [release]: 0 w.p. ``rate``, else 1/(1-rate).

    Returns float32 of ``shape`` (B, T). ``rate == 0`` gives all ones (the paper's variant).
    """
    if rate == 0.0:
        return jnp.ones(shape, jnp.float32)
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return keep.astype(jnp.float32) / (1.0 - rate)


class Selection(NamedTuple):
    """What the losses and the localisation need from one forward pass.

    Shapes: B videos, E embedding channels, C classes, T (padded) segments.
    """
    p_act: jax.Array          # (B, C) video-level action scores, softmax of top-k mean of A
    p_bkg: jax.Array          # (B, C) background scores, softmax of mean of A over bkg segments
    feat_act: jax.Array | None  # (B, E) mean embedding of the pseudo action segments
    feat_bkg: jax.Array | None  # (B, E) mean embedding of the pseudo background segments
    bkg_softmax: jax.Array    # (B, C) mean segment softmax over the bkg segments (paper Eq. 8)
    magnitudes: jax.Array     # (B, T) ||f_t||
    mu_act: jax.Array         # (B,) mean magnitude of the pseudo action segments
    mu_bkg: jax.Array         # (B,) mean magnitude of the pseudo background segments
    cas_softmax: jax.Array    # (B, T, C) segment-level class probabilities


def select(cas: jax.Array, magnitudes: jax.Array, *, r_act: int, r_bkg: int,
           features: jax.Array | None = None, mask: jax.Array | None = None,
           lengths: jax.Array | None = None) -> Selection:
    """Pseudo action/background segments and video-level scores (SPEC §2 items 4-8).

    Args:
      cas: (B, T, C) class activations A.
      magnitudes: (B, T) feature magnitudes ||f_t|| (:func:`feature_magnitudes`).
      features: optional (B, T, E) embedded features F (before dropout); needed only for
        ``feat_act``/``feat_bkg`` (the uncertainty loss), which are None without it.
      r_act, r_bkg: static ratios; k = max(1, T' // r).
      mask: optional (B, T) selection mask [release] multiplying the magnitudes (training).
      lengths: optional (B,) true lengths T' <= T; None means every video fills T.
    """
    batch, num_segments, _ = cas.shape
    if lengths is None:
        lengths = jnp.full((batch,), num_segments, jnp.int32)
    valid = jnp.arange(num_segments)[None, :] < lengths[:, None]          # (B, T)
    k_act = num_selected(lengths, r_act)
    k_bkg = num_selected(lengths, r_bkg)
    kmax_act = num_selected(num_segments, r_act)
    kmax_bkg = num_selected(num_segments, r_bkg)

    drop = jnp.ones_like(magnitudes) if mask is None else mask
    max_mag = jnp.max(jnp.where(valid, magnitudes, -jnp.inf), axis=1, keepdims=True)
    act_rank = jnp.where(valid, magnitudes * drop, -jnp.inf)
    bkg_rank = jnp.where(valid, (max_mag - magnitudes) * drop, -jnp.inf)
    idx_act, w_act = topk_weights(act_rank, kmax_act, k_act)
    idx_bkg, w_bkg = topk_weights(bkg_rank, kmax_bkg, k_bkg)

    # Per class, the mean of its own top-k activations over valid time (B, C, T) -> (B, C).
    cas_t = jnp.swapaxes(jnp.where(valid[..., None], cas, -jnp.inf), 1, 2)
    top_cas, _ = jax.lax.top_k(cas_t, kmax_act)
    w_cls = w_act[:, None, :]
    score_act = jnp.sum(jnp.where(w_cls > 0, top_cas, 0.0) * w_cls, axis=-1)
    score_bkg = weighted_gather(cas, idx_bkg, w_bkg)
    cas_softmax = segment_softmax(cas)
    return Selection(
        p_act=jax.nn.softmax(score_act, axis=-1),
        p_bkg=jax.nn.softmax(score_bkg, axis=-1),
        feat_act=None if features is None else weighted_gather(features, idx_act, w_act),
        feat_bkg=None if features is None else weighted_gather(features, idx_bkg, w_bkg),
        bkg_softmax=weighted_gather(cas_softmax, idx_bkg, w_bkg),
        magnitudes=magnitudes,
        mu_act=weighted_gather(magnitudes[..., None], idx_act, w_act)[:, 0],
        mu_bkg=weighted_gather(magnitudes[..., None], idx_bkg, w_bkg)[:, 0],
        cas_softmax=cas_softmax)
