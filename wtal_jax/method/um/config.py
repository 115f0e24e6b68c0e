"""UM's own config fields (SPEC §2-§5): the network, the losses and its localisation.

Its release is the common default everywhere else (``wtal_jax.config.COMMON``), so it changes no
common field.
"""

from wtal_jax.config.rules import (COUNT, F, FLAG, FRACTION_BELOW_ONE, POSITIVE, PROBABILITY,
                                   Items, OneOf, real)


def _arange(start: float, stop: float, step: float) -> tuple[float, ...]:
    """The release builds its thresholds with np.arange; keep exactly those float values."""
    import numpy as np
    return tuple(float(v) for v in np.arange(start, stop, step))


CONFIG = {
    'model': {
        'embed_dim': F(2048, COUNT),            # E (the release fixes 2048; the paper: E = D)
        'dropout_rate': F(0.7, FRACTION_BELOW_ONE),   # before the classifier, training only
        'r_act': F(9, COUNT),                   # k_act = T // r_act
        'r_bkg': F(4, COUNT),                   # k_bkg = T // r_bkg
        # [release] dropout mask on the magnitudes ranked for top-k; 0 = the paper.
        'selection_dropout': F(0.7, FRACTION_BELOW_ONE),
    },
    'loss': {
        'alpha': F(5e-4, real(0)),              # weight of L_um
        'beta': F(1.0, real(0)),                # weight of L_be
        'margin': F(100.0, POSITIVE),           # m, the maximum feature magnitude (Eq. 4, 7)
        'cls_variant': F('release', OneOf(('release', 'paper'))),   # BCE | Eq. 6
        'be_variant': F('release', OneOf(('release', 'paper'))),    # BCE to 1/C | Eq. 8
        # '1' (release: L_cls averages over classes) | 'classes' (x C: keeps its weight when C
        # grows, ActivityNet).
        'cls_scale': F('1', OneOf(('1', 'classes'))),
    },
    'localize': {
        'theta_vid': F(0.2, PROBABILITY),       # localise the classes with p_act >= this
        'score_thresholds': F(_arange(0.0, 0.25, 0.025), Items(PROBABILITY, nonempty=True)),
        'magnitude_thresholds': F(_arange(0.4, 0.625, 0.025),
                                  Items(PROBABILITY, nonempty=True)),
        # Proposal families pooled before NMS: on the fused score, on the normalised magnitude.
        'families': F(('score', 'magnitude'),
                      Items(OneOf(('score', 'magnitude')), nonempty=True, distinct=True)),
        'fuse_magnitude': F(True, FLAG),        # False: softmax-only score, no magnitude
                                                # family (Table 3, a)
    },
}
