"""UM's scores for localisation (SPEC §5 steps 2-4), plain NumPy: the classes to localise, the
fused score Eq. 3, and the normalised magnitude with its proposal family.
"""

from typing import NamedTuple

import numpy as np

from wtal_jax.errors import UserError
from wtal_jax.postprocess.localization import Family, VideoOutput, VideoScores, minmax_per_class


class UMScores(NamedTuple):
    """What UM's network gives for one test video (SPEC §5.1), as NumPy arrays."""
    p_act: np.ndarray  # (C,) video-level action probabilities (softmax over classes)
    cas_softmax: np.ndarray  # (T', C) segment-level softmax over classes, T' = min(n, T)
    magnitudes: np.ndarray  # (T',) feature magnitudes ||f_t||_2 of the embedded features
    mu_act: float  # mean magnitude over the pseudo-action segments (top-k_act, no mask)
    mu_bkg: float  # mean magnitude over the pseudo-background segments
    num_segments: int  # n, the video's original number of segments before sampling
    duration: float | None = None  # seconds, from the annotation file, if known


def from_output(video: VideoOutput) -> UMScores:
    """One video's outputs of UM's ``videos`` (see ``method.um``), cut to its own length."""
    out, length = video.outputs, video.length
    return UMScores(p_act=out['p_act'], cas_softmax=out['cas_softmax'][:length],
                    magnitudes=out['magnitudes'][:length], mu_act=float(out['mu_act']),
                    mu_bkg=float(out['mu_bkg']), num_segments=video.num_segments,
                    duration=video.duration)


def select_classes(p_act: np.ndarray, theta: float) -> np.ndarray:
    """Classes to localise: those with p_act >= theta, else the arg-max class (step 2).

    Returns:
      (K,) int64 class indices in ascending order, K >= 1.
    """
    selected = np.flatnonzero(np.asarray(p_act) >= theta)
    if selected.size == 0:
        selected = np.array([np.argmax(p_act)])
    return selected.astype(np.int64)


def normalized_magnitude(magnitudes: np.ndarray, mu_act: float, mu_bkg: float) -> np.ndarray:
    """u_t = clip((m_t - mu_bkg) / (mu_act - mu_bkg), 0, 1) (step 3), (T',) -> (T',) float64.

    A non-positive denominator is replaced by 1, as the release's ``minmax_norm`` does.
    """
    delta = mu_act - mu_bkg
    if delta <= 0:
        delta = 1.0
    return np.clip((np.asarray(magnitudes, np.float64) - mu_bkg) / delta, 0.0, 1.0)


def fused_scores(cas_softmax: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Eq. 3 fused score ``cas_softmax * u``, min-max normalised per class over time and
    clipped to [0, 1] (step 4; see ``localization.minmax_per_class``).

    Args:
      cas_softmax: (T', C) segment-level softmax over classes.
      u: (T',) normalised magnitudes (all ones for softmax-only scores).
    Returns:
      (T', C) float64.
    """
    s = np.asarray(cas_softmax, np.float64) * np.asarray(u, np.float64)[:, None]
    return minmax_per_class(s, clip=True)


def _check(um: UMScores, name: str) -> None:
    """Raises UserError naming the video if its arrays disagree in shape or are not finite."""
    p_act, cas, mags = (np.asarray(a) for a in (um.p_act, um.cas_softmax, um.magnitudes))
    if p_act.ndim != 1 or cas.ndim != 2 or cas.shape[1] != p_act.shape[0] or cas.shape[0] < 1:
        raise UserError(f'{name}: p_act shape {p_act.shape} and cas_softmax shape {cas.shape} '
                        'do not form (C,) and (T\', C) with T\' >= 1')
    if mags.shape != (cas.shape[0],):
        raise UserError(f'{name}: magnitudes shape {mags.shape}, expected ({cas.shape[0]},)')
    if not cas.shape[0] <= um.num_segments:
        raise UserError(f'{name}: {cas.shape[0]} sampled segments but only '
                        f'num_segments={um.num_segments} originally')
    values = (p_act, cas, mags, np.array([um.mu_act, um.mu_bkg], np.float64))
    if not all(np.isfinite(v).all() for v in values):
        raise UserError(f'{name}: non-finite p_act, cas_softmax, magnitudes or mu_act/mu_bkg')


def video_scores(um: UMScores, hp, *, name: str = 'video') -> VideoScores:
    """UM's scores of one video for the shared localisation (SPEC §5 steps 2-4, 6).

    The classes with p_act >= ``localize.theta_vid`` (else the arg-max), the fused score of
    every class (``localize.fuse_magnitude=False``: the softmax alone), p_act as the
    video-level term, and the two release families: the fused score's own thresholds
    (``localize.score_thresholds``) and the normalised magnitude's
    (``localize.magnitude_thresholds``), as ``localize.families`` chooses.
    """
    _check(um, name)
    z = hp.localize
    u = normalized_magnitude(um.magnitudes, um.mu_act, um.mu_bkg)
    fuse = z.fuse_magnitude
    families = []
    if 'score' in z.families:
        families.append(Family(tuple(z.score_thresholds)))
    if 'magnitude' in z.families and fuse:
        families.append(Family(tuple(z.magnitude_thresholds), u, 'normalised magnitude u'))
    # Compared in its own dtype (float32 from the model), as the release compares its scores.
    return VideoScores(
        p_act=np.asarray(um.p_act), scores=fused_scores(um.cas_softmax, u if fuse else
                                                        np.ones(len(u))),
        classes=select_classes(um.p_act, z.theta_vid),
        class_score=np.asarray(um.p_act, np.float64), families=tuple(families),
        num_segments=um.num_segments, duration=um.duration)


def scores(video: VideoOutput, *, hp) -> VideoScores:
    """``METHOD.scores``: one video's outputs from inference -> its scores for localisation."""
    return video_scores(from_output(video), hp)
