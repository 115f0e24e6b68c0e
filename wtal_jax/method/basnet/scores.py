"""BaS-Net's scores for localisation (SPEC §8.6 steps 1-4), plain NumPy, as the release's
test.py computes them: from the suppression branch only, its background column dropped.
"""

import numpy as np

from wtal_jax.postprocess.localization import Family, VideoOutput, VideoScores, minmax_per_class


def localised_classes(p: np.ndarray, theta: float, *, skip_first_class_alone: bool
                      ) -> np.ndarray:
    """The classes with p >= theta, ascending (no arg-max fallback, unlike UM).

    [quirk] ``skip_first_class_alone``: the release's ``if pred.any()`` tests the indices, so
    none is localised when the only one is class 0.
    """
    classes = np.flatnonzero(np.asarray(p) >= theta).astype(np.int64)
    if skip_first_class_alone and not classes.any():
        return classes[:0]
    return classes


def video_scores(p_supp: np.ndarray, cas_supp: np.ndarray, *, num_segments: int, hp,
                 duration: float | None = None) -> VideoScores:
    """One video's scores (SPEC §8.6).

    Args:
      p_supp: (C+1,) the suppression branch's video scores (softmax over C+1).
      cas_supp: (T', C+1) its class activations, float32 as the network gives them.
    The class scores are ``p_supp[:C]`` (not renormalised); the segment scores the min-max
    normalised activations, not clipped, in float32 as the release; a localised class's
    video-level term is 1 (the release adds 0.2 * its binarised score); one proposal family,
    the thresholds of the scores themselves.
    """
    z = hp.localize
    num_classes = p_supp.shape[0] - 1
    p = np.asarray(p_supp)[:num_classes]
    classes = localised_classes(p, z.theta_vid, skip_first_class_alone=z.skip_first_class_alone)
    return VideoScores(
        p_act=p, scores=minmax_per_class(np.asarray(cas_supp)[:, :num_classes], clip=False),
        classes=classes, class_score=(p >= z.theta_vid).astype(np.float64),
        families=(Family(tuple(z.score_thresholds)),), num_segments=num_segments,
        duration=duration)


def scores(video: VideoOutput, *, hp) -> VideoScores:
    """``METHOD.scores``: one video's outputs from inference -> its scores for localisation."""
    out = video.outputs
    return video_scores(out['p_supp'], out['cas_supp'][:video.length],
                        num_segments=video.num_segments, hp=hp, duration=video.duration)
