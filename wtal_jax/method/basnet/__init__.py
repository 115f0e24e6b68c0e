"""BaS-Net: background suppression (Lee, Uh, Byun, AAAI 2020; SPEC §8), the seed paper's
comparison (its Fig. 4), identical to its release (Pilhyeon/BaSNet-pytorch).

``models`` (the filtering module and the shared CAS module), ``losses`` (the two branch BCEs and
the L1 norm), ``scores`` (the suppression branch for localisation, NumPy), ``config`` (its fields
and its release's values of the common ones), ``torch_layout`` (the release's state dict). This
module wires them into :data:`METHOD`.
"""

import jax
import jax.numpy as jnp

from wtal_jax.method import Method
from wtal_jax.method.basnet import losses, models, scores, torch_layout
from wtal_jax.method.basnet.config import CONFIG, DEFAULTS
from wtal_jax.method.common import num_selected


def segments(module, params, x: jax.Array, *, hp, key: jax.Array | None = None,
             valid: jax.Array | None = None) -> dict:
    """The network on one sequence x (T, D).

    With ``key`` (training): both branches' class activations ``cas_base`` and ``cas_supp``
    (T, C+1) and the foreground ``weights`` (T,), dropout drawn from ``key``. Without
    (inference): the suppression branch and the weights only; ``valid`` (T,) marks a packed
    chunk's own segments (see ``models.CAS``).
    """
    if key is None:
        out = module.apply({'params': params}, x[None], train=False, base=False,
                           valid=None if valid is None else valid[None])
    else:
        out = module.apply({'params': params}, x[None], train=True, rngs={'dropout': key})
    return {name: value[0] for name, value in out.items()}


def topk_mean(cas: jax.Array, k: int, lengths: jax.Array | None = None) -> jax.Array:
    """Per class, the mean of its k largest activations over time: (B, T, K) -> (B, K).

    The release's sort + slice, then the mean: a video shorter than k averages all of its
    segments. Padded positions (``lengths``, (B,)) never count.
    """
    batch, length, _ = cas.shape
    lengths = jnp.full((batch,), length, jnp.int32) if lengths is None else lengths
    valid = jnp.arange(length)[None, :] < lengths[:, None]
    k_max = min(k, length)
    top, _ = jax.lax.top_k(jnp.swapaxes(jnp.where(valid[..., None], cas, -jnp.inf), 1, 2), k_max)
    count = jnp.minimum(lengths, k_max)[:, None]                     # (B, 1)
    taken = jnp.arange(k_max)[None, None, :] < count[..., None]      # (B, 1, k_max)
    return jnp.sum(jnp.where(taken, top, 0.0), axis=-1) / count.astype(cas.dtype)


def videos(seg: dict, *, hp, lengths: jax.Array | None = None) -> dict:
    """Per-segment outputs of B videos -> each branch's video scores, softmax over C+1 (SPEC
    §8.3): ``p_supp`` (and ``p_base`` in training), with ``cas_supp`` and ``weights``."""
    k = num_selected(hp.data.num_segments, hp.model.topk_ratio)
    out = {'p_supp': jax.nn.softmax(topk_mean(seg['cas_supp'], k, lengths), axis=-1),
           'cas_supp': seg['cas_supp'], 'weights': seg['weights']}
    if 'cas_base' in seg:
        out['p_base'] = jax.nn.softmax(topk_mean(seg['cas_base'], k, lengths), axis=-1)
    return out


METHOD = Method(
    name='basnet', config=CONFIG, defaults=DEFAULTS, model=models.model, segments=segments,
    videos=videos, losses=losses.per_video_losses, scores=scores.scores,
    torch=torch_layout.LAYOUT)
