"""UM: uncertainty modelling (Lee, Wang, Lu, Byun, AAAI 2021; SPEC §2-§5), the seed paper.

``models`` (the network), ``selection`` (magnitudes, top-k pseudo action and background
segments, video scores), ``losses`` (L_cls, L_um, L_be), ``scores`` (the fused score and the
magnitude family for localisation, NumPy), ``config`` (its fields), ``torch_layout`` (the
release's state dict). This module wires them into :data:`METHOD`.
"""

import jax

from wtal_jax.method import Method
from wtal_jax.method.um import losses, models, scores, selection, torch_layout
from wtal_jax.method.um.config import CONFIG


def segments(module, params, x: jax.Array, *, hp, key: jax.Array | None = None,
             valid: jax.Array | None = None) -> dict:
    """The network on one sequence x (T, D).

    With ``key`` (the training pass): class activations ``cas`` (T, C), embeddings
    ``features`` (T, E) and the release's selection ``mask`` (T,) on the magnitudes, dropout and
    mask drawn from ``key`` alone. Without (inference): ``cas`` and the magnitudes (T,) only,
    the embeddings being too large to keep for every test video. ``valid`` is not needed: one
    "same" convolution sees a packed chunk's zero gap as its padding.
    """
    if key is None:
        cas, features = module.apply({'params': params}, x[None], train=False)
        return {'cas': cas[0], 'magnitudes': selection.feature_magnitudes(features)[0]}
    drop_key, mask_key = jax.random.split(key)
    cas, features = module.apply({'params': params}, x[None], train=True,
                                 rngs={'dropout': drop_key})
    mask = selection.selection_mask(mask_key, (x.shape[0],), hp.model.selection_dropout)
    return {'cas': cas[0], 'features': features[0], 'mask': mask}


def videos(seg: dict, *, hp, lengths: jax.Array | None = None) -> selection.Selection:
    """Per-segment outputs of B videos -> the pseudo segments and video scores (SPEC §2)."""
    features = seg.get('features')
    magnitudes = seg['magnitudes'] if features is None else \
        selection.feature_magnitudes(features)
    return selection.select(seg['cas'], magnitudes, features=features, mask=seg.get('mask'),
                            r_act=hp.model.r_act, r_bkg=hp.model.r_bkg, lengths=lengths)


METHOD = Method(
    name='um', config=CONFIG, defaults={}, model=models.model, segments=segments,
    videos=videos, losses=losses.per_video_losses, scores=scores.scores,
    torch=torch_layout.LAYOUT)
