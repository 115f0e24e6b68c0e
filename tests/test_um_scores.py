"""UM's scores for localisation (wtal_jax.method.um.scores, SPEC §5 steps 2-4): the classes to
localise, the normalised magnitude, the fused score. Their use in localisation, against the
release, is in test_localization.py."""

import numpy as np

from wtal_jax.method.um import scores as um

from test_localization import ONE, LocalizeConfig, _video, localize_video


def test_select_classes_threshold_is_inclusive_with_argmax_fallback():
    np.testing.assert_array_equal(um.select_classes(np.array([0.1, 0.25, 0.2, 0.05]), 0.2),
                                  [1, 2])
    np.testing.assert_array_equal(um.select_classes(np.array([0.1, 0.15, 0.12]), 0.2), [1])
    assert um.select_classes(np.array([0.1, 0.15, 0.12]), 0.2).dtype == np.int64


def test_localize_video_fallback_localizes_only_the_argmax_class():
    seq = np.array([0, 1, 1, 0.5, 0])
    cas = np.stack([seq, seq, seq], axis=1)
    det = localize_video(_video(seq, cas=cas, p_act=[0.1, 0.15, 0.12]),
                             LocalizeConfig(**ONE, fuse_magnitude=False))
    assert len(det.class_idx) and set(det.class_idx.tolist()) == {1}


def test_normalized_magnitude_and_its_denominator_guard():
    m = np.array([4.0, 6.0, 7.5, 12.0])
    np.testing.assert_allclose(um.normalized_magnitude(m, 10.0, 5.0), [0, 0.2, 0.5, 1])
    # mu_act <= mu_bkg: the denominator becomes 1, so u = clip(m - mu_bkg, 0, 1).
    np.testing.assert_allclose(um.normalized_magnitude(np.array([4.5, 5.25, 9]), 5.0, 5.0),
                               [0, 0.25, 1])
    np.testing.assert_allclose(um.normalized_magnitude(np.array([4.5, 5.25, 9]), 3.0, 5.0),
                               [0, 0.25, 1])


def test_fused_scores_min_max_per_class():
    cas = np.array([[0.5, 0.5], [0.2, 0.8], [0.9, 0.1]])
    np.testing.assert_allclose(um.fused_scores(cas, np.array([1, 0.5, 0])),
                               [[1, 1], [0.2, 0.8], [0, 0]])
    # Positive minimum: (s - min) / (max - min).
    np.testing.assert_allclose(um.fused_scores(cas, np.ones(3))[:, 0], [0.3 / 0.7, 0, 1])


def test_fused_scores_guards():
    # Constant class: max - min = 0 is replaced by 1, giving 0 everywhere.
    np.testing.assert_array_equal(um.fused_scores(np.full((3, 1), 0.4), np.ones(3)), 0)
    # Negative values: min = relu(min) = 0, and the result is clipped at 0.
    np.testing.assert_allclose(um.fused_scores(np.array([[-1.0], [0.5]]), np.ones(2)), [[0], [1]])
    # All negative: max = min = 0, delta -> 1, all clipped to 0.
    np.testing.assert_array_equal(um.fused_scores(np.array([[-1.0], [-0.5]]), np.ones(2)), 0)
