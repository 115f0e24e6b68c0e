"""BaS-Net's own config fields (SPEC §8), and its release's values of the common fields.

Release: Pilhyeon/BaSNet-pytorch (Lee, Uh, Byun, AAAI 2020); options.py, config.py, model.py.
"""

import numpy as np

from wtal_jax.config.rules import (COUNT, F, FLAG, FRACTION_BELOW_ONE, PROBABILITY, Items, real)

_ACT_THRESH = tuple(float(t) for t in np.arange(0.0, 0.25, 0.025))   # config.py: act_thresh

CONFIG = {
    'model': {
        'filter_dim': F(512, COUNT),            # channels of the filtering module's first conv
        'embed_dim': F(2048, COUNT),            # channels of the CAS module's two k = 3 convs
        'dropout_rate': F(0.7, FRACTION_BELOW_ONE),   # before the CAS classifier, training
        'topk_ratio': F(8, COUNT),              # k = data.num_segments // topk_ratio (93 of 750)
    },
    'loss': {
        'alpha': F(1e-4, real(0)),              # weight of the L1 norm of the filter's weights
    },
    'localize': {
        'theta_vid': F(0.25, PROBABILITY),      # class_th: localise the classes with p >= this
        'score_thresholds': F(_ACT_THRESH, Items(PROBABILITY, nonempty=True)),   # act_thresh
        # [quirk] test.py's `if pred.any()` tests the class *indices*: a video whose only
        # localised class is class 0 gets no detections. False closes it.
        'skip_first_class_alone': F(True, FLAG),
    },
}

# The release's values of the common fields that differ from UM's (SPEC §8.1-§8.7).
DEFAULTS = {
    'data.test_sampling': 'fixed',              # uniform_sampling: always T = 750 indices
    'train.batch_order': 'draws',               # one epoch, then a fresh draw every step
    'train.num_steps': 1500,                    # --lr '[0.0001]*1500'
    'eval.class_threshold': 0.25,               # test_acc on the binarised scores
    'eval.tiou_thresholds': tuple(float(t) for t in np.linspace(0.1, 0.9, 9)),
    'localize.min_run_length': 1,               # no minimum: single points are proposals
    'localize.nms_iou': 0.7,
}
