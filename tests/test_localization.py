"""Tests of UM's localisation (SPEC §5): wtal_jax.postprocess.localization, shared by every method,
with UM's scores (wtal_jax.method.um.scores). Hand-built cases for every rule, and a literal port
of the authors' release (test.py + utils.get_proposal_oic + utils.nms) on random scores of the
real THUMOS'14 test video lengths."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from wtal_jax import config
from wtal_jax.errors import UserError
from wtal_jax.method.um import scores as um
from wtal_jax.postprocess import localization as loc

# UM's outputs of one video: what the cases below build.
VideoScores = um.UMScores
_DATA = ('segment_frames', 'fps', 'use_duration')


def LocalizeConfig(**settings):
    """UM's default config, frozen, with these ``localize`` (and ``data``) settings."""
    cfg = config.default_config()
    for key, value in settings.items():
        section = cfg['data' if key in _DATA else 'localize']
        with section.ignore_type():
            section[key] = tuple(value) if isinstance(value, list) else value
    config.validate(cfg)
    return config.frozen(cfg)


def localize_video(vs, hp, *, name='video'):
    """UM's scores of one video, localised."""
    return loc.localize_video(um.video_scores(vs, hp, name=name),
                              loc.LocalizeConfig.from_config(hp), name=name)


def localize(videos, class_names, hp=None):
    """UM's scores of every video, localised into a results dict."""
    hp = hp or LocalizeConfig()
    return loc.localize({v: um.video_scores(vs, hp, name=v) for v, vs in videos.items()},
                        class_names, loc.LocalizeConfig.from_config(hp))

# Positions are segments (no interpolation) in the hand-built cases; values there are dyadic
# (multiples of 1/8), so interpolation at the integer points and every mean below are exact.
ONE = dict(upsample=1)


def _video(seq, *, n=None, p_act=(1.0,), magnitudes=None, cas=None, duration=None):
    """One video with T' = len(seq); mu_act = 1 and mu_bkg = 0, so u = clip(magnitudes, 0, 1)."""
    seq = np.asarray(seq, np.float64)
    cas = seq[:, None] if cas is None else np.asarray(cas, np.float64)
    mags = np.ones(len(seq)) if magnitudes is None else np.asarray(magnitudes, np.float64)
    return VideoScores(np.asarray(p_act, np.float64), cas, mags, 1.0, 0.0,
                       len(seq) if n is None else n, duration)


def _rows(det):
    """Detections as a list of (class, score, start, end) tuples."""
    return [(int(c), float(s), float(a), float(b))
            for c, s, (a, b) in zip(det.class_idx, det.score, det.segments)]


def _assert_rows(det, expected):
    got = _rows(det)
    assert len(got) == len(expected), (got, expected)
    for g, e in zip(got, expected):
        assert g[0] == e[0], (got, expected)
        np.testing.assert_allclose(g[1:], e[1:], rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Configuration


def test_config_defaults_are_the_release_values():
    hp = LocalizeConfig()
    cfg, data = hp.localize, hp.data
    assert cfg.score_thresholds == tuple(np.arange(0, 0.25, 0.025))
    assert len(cfg.score_thresholds) == 10 and cfg.score_thresholds[3] == 0.07500000000000001
    assert cfg.magnitude_thresholds == tuple(np.arange(0.4, 0.625, 0.025))
    assert len(cfg.magnitude_thresholds) == 9
    assert cfg.magnitude_thresholds[0] == 0.4 and abs(cfg.magnitude_thresholds[-1] - 0.6) < 1e-12
    assert all(type(t) is float for t in cfg.score_thresholds + cfg.magnitude_thresholds)
    assert (cfg.theta_vid, cfg.upsample, cfg.min_run_length, cfg.outer_ratio, cfg.p_act_weight,
            cfg.nms_iou, data.segment_frames, data.fps) == (0.2, 24, 2, 0.25, 0.2, 0.6, 16, 25.0)
    assert cfg.families == ('score', 'magnitude') and cfg.fuse_magnitude and not data.use_duration


def test_config_accepts_lists_and_rejects_bad_values():
    cfg = LocalizeConfig(score_thresholds=[0, 0.5], families=['score']).localize
    assert cfg.score_thresholds == (0.0, 0.5) and cfg.families == ('score',)
    hash(cfg)
    for bad in (dict(families=('score', 'flow')), dict(families=()), dict(upsample=0),
                dict(upsample=2.5), dict(min_run_length=0), dict(nms_iou=0.0), dict(fps=0)):
        with pytest.raises(UserError):
            LocalizeConfig(**bad)


# ---------------------------------------------------------------------------------------------
# Scores (steps 2-4)


# ---------------------------------------------------------------------------------------------
# Upsampling (step 5)


def _hand_upsample(x, factor):
    """Linear interpolation by hand: point p lies in segment j = min(floor(p), T' - 2); points past
    T' - 1 extrapolate along the last segment; T' = 1 is constant."""
    t = x.shape[0]
    points = np.arange(0, t, 1 / factor)
    if t == 1:
        return np.repeat(x, points.size, axis=0)
    j = np.minimum(np.floor(points).astype(np.int64), t - 2)
    w = (points - j).reshape((-1,) + (1,) * (x.ndim - 1))
    return x[j] + (x[j + 1] - x[j]) * w


def test_upsample_hand_values_and_extrapolation():
    np.testing.assert_allclose(loc.upsample(np.array([0.0, 1.0, 3.0]), 2),
                               [0, 0.5, 1, 2, 3, 4])
    x = np.random.default_rng(0).random((37, 3))
    got = loc.upsample(x, 24)
    assert got.shape == (24 * 37, 3)
    np.testing.assert_allclose(got, _hand_upsample(x, 24), rtol=0, atol=1e-14)
    # The last 23 points lie past T' - 1 and continue the last slope.
    p = np.arange(0, 37, 1 / 24)[-1]
    np.testing.assert_allclose(got[-1], x[36] + (x[36] - x[35]) * (p - 36), atol=1e-14)


def test_upsample_point_count_and_the_rounding_case():
    for t in range(1, 200):
        assert loc.upsample(np.zeros(t), 24).shape == (24 * t,)
    # 1 / (1/49) rounds up to 49.00000000000001, so np.arange gives one extra point.
    for t in (1, 2, 4):
        out = loc.upsample(np.array([1.0, 3.0, 2.0, 5.0])[:t], 49)
        assert out.shape == (49 * t + 1,)
    x = np.array([1.0, 3.0])
    out = loc.upsample(x, 49)
    last = 98 * (1 / 49)  # just below 2: past the last original point
    assert last > 1 and out[-1] == pytest.approx(1 + 2 * last, abs=1e-13)


def test_upsample_single_segment_is_constant():
    out = loc.upsample(np.array([[0.25, 0.75]]), 24)
    assert out.shape == (24, 2)
    np.testing.assert_array_equal(out, np.tile([0.25, 0.75], (24, 1)))


def test_upsample_equals_scipy_interp1d_exactly():
    interpolate = pytest.importorskip('scipy.interpolate', reason='scipy (a jax dependency) gives the reference interp1d')
    rng = np.random.default_rng(1)
    for t, f in ((2, 24), (5, 24), (750, 24), (3, 49), (7, 5)):
        x = rng.random((t, 2, 1))
        ref = interpolate.interp1d(np.arange(t), x, kind='linear', axis=0,
                                   fill_value='extrapolate')(np.arange(0, t, 1 / f))
        np.testing.assert_array_equal(loc.upsample(x, f), ref)


# ---------------------------------------------------------------------------------------------
# Runs and outer-inner contrast (steps 6-7)


def _loop_runs(mask):
    """Runs of one 1-D mask by walking it."""
    runs, start = [], None
    for i, v in enumerate(list(mask) + [False]):
        if v and start is None:
            start = i
        if not v and start is not None:
            runs.append((start, i - 1))
            start = None
    return runs


def test_find_runs_hand_cases():
    starts, ends = loc.find_runs(np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 1], bool))
    assert starts.tolist() == [1, 4, 7] and ends.tolist() == [2, 4, 9]
    starts, ends = loc.find_runs(np.zeros(5, bool))
    assert starts.size == 0 and ends.size == 0
    assert [a.tolist() for a in loc.find_runs(np.ones(4, bool))] == [[0], [3]]
    # A run ending a row and one starting the next stay separate.
    rows, starts, ends = loc.find_runs(np.array([[0, 1, 1], [1, 1, 0]], bool))
    assert (rows.tolist(), starts.tolist(), ends.tolist()) == ([0, 1], [1, 0], [2, 1])


def test_find_runs_matches_a_loop_in_one_call_over_rows():
    rng = np.random.default_rng(2)
    mask = rng.random((2, 7, 50)) < rng.random((2, 7, 1))
    i, j, starts, ends = loc.find_runs(mask)
    got = list(zip(i.tolist(), j.tolist(), starts.tolist(), ends.tolist()))
    want = [(a, b, s, e) for a in range(2) for b in range(7) for s, e in _loop_runs(mask[a, b])]
    assert got == want


def test_outer_windows_at_both_borders_and_int_truncation():
    seq = np.arange(1.0, 11.0)[None]  # value = position + 1, last position 9
    runs = {  # (start, end): (inner, outer) by hand
        (0, 3): (2.5, 5.0),   # left [0, 0) empty; right int(3 + 1) = 4 -> {4}
        (7, 9): (9.0, 7.0),   # left int(7 - 0.75) = 6 -> {6}; right clamped to 9 -> empty
        (3, 4): (4.5, 3.0),   # left int(2.5) = 2 -> {2}; right int(4.5) = 4 -> empty
        (1, 6): (4.5, 4.5),   # left int(-0.5) = 0 -> {0}; right int(7.5) = 7 -> {7}: (1 + 8) / 2
        (0, 9): (5.5, 0.0),   # whole sequence: no outer at all, outer = 0
    }
    starts = np.array([a for a, _ in runs])
    ends = np.array([b for _, b in runs])
    got = loc.outer_inner_contrast(seq, np.zeros(len(runs), np.int64), starts, ends, 0.25)
    np.testing.assert_allclose(got, [i - o for i, o in runs.values()], rtol=0, atol=1e-12)


def test_outer_inner_contrast_matches_a_loop_on_many_rows():
    rng = np.random.default_rng(3)
    seq = rng.random((6, 300))
    rows, starts, ends = loc.find_runs(seq > 0.3)
    got = loc.outer_inner_contrast(seq, rows, starts, ends, 0.25)
    want = []
    for r, a, b in zip(rows, starts, ends):
        n = b - a + 1
        outer = list(range(max(0, int(a - 0.25 * n)), a))
        outer += list(range(b + 1, min(299, int(b + 0.25 * n)) + 1))
        want.append(seq[r, a:b + 1].mean() - (seq[r, outer].mean() if outer else 0))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_window_sums_in_any_order_with_empty_windows():
    values = np.arange(10.0)
    lo, hi = np.array([5, 0, 3, 9, 2, 10, 0]), np.array([9, 3, 3, 10, 8, 10, 10])
    np.testing.assert_allclose(loc.window_sums(values, lo, hi), [26, 3, 0, 9, 27, 0, 45])
    assert loc.window_sums(values, lo[:0], hi[:0]).shape == (0,)
    rng = np.random.default_rng(8)
    for _ in range(200):
        size = int(rng.integers(1, 30))
        values = rng.random(size)
        lo = rng.integers(0, size + 1, 15)
        hi = np.minimum(size, lo + rng.integers(0, 10, 15))
        np.testing.assert_allclose(loc.window_sums(values, lo, hi),
                                   [values[a:b].sum() for a, b in zip(lo, hi)], atol=1e-12)


# A video whose score family and magnitude family differ: threshold 0.5, T' = n = 14, so one
# position is 16 * 14 / (14 * 25) = 0.64 s. Above 0.5: [1], [3..10], [12].
SEQ = [0, 0.75, 0.25, 1, 1, 1, 1, 1, 1, 1, 1, 0.25, 0.875, 0]


def test_score_family_scores_on_the_thresholded_sequence():
    cfg = LocalizeConfig(**ONE, families=('score',), score_thresholds=(0.5,),
                         fuse_magnitude=False)
    det = localize_video(_video(SEQ), cfg)
    # Run [3, 10], len 8: outer {1, 2} and {11, 12}; below 0.5 counts as 0: (0.75 + 0.875) / 4.
    _assert_rows(det, [(0, 1 - 1.625 / 4 + 0.2, 3 * 0.64, 11 * 0.64)])


def test_magnitude_family_scores_on_the_unthresholded_fused_score():
    # cas = 1, so the fused score is u itself; candidates are u >= 0.5.
    cfg = LocalizeConfig(**ONE, families=('magnitude',), magnitude_thresholds=(0.5,))
    det = localize_video(_video(np.ones(14), magnitudes=SEQ), cfg)
    # Same run, but the outer mean is taken on the unthresholded score: 2.125 / 4.
    _assert_rows(det, [(0, 1 - 2.125 / 4 + 0.2, 3 * 0.64, 11 * 0.64)])


def test_thresholds_are_inclusive_in_both_families():
    # Values exactly at the threshold are candidates: run [1, 2] (the 1 at 4 is a single
    # position), outer {0} = 0, n = T' = 6, so 0.64 s per position.
    seq = [0, 0.5, 0.5, 0, 1, 0]
    score = LocalizeConfig(**ONE, families=('score',), score_thresholds=(0.5,),
                           fuse_magnitude=False)
    _assert_rows(localize_video(_video(seq), score), [(0, 0.7, 0.64, 1.92)])
    magnitude = LocalizeConfig(**ONE, families=('magnitude',), magnitude_thresholds=(0.5,))
    _assert_rows(localize_video(_video(np.ones(6), magnitudes=seq), magnitude),
                 [(0, 0.7, 0.64, 1.92)])
    # A threshold of 0 still needs u > 0, as the release's "set below to 0, keep > 0" rule.
    magnitude = LocalizeConfig(**ONE, families=('magnitude',), magnitude_thresholds=(0.0,))
    _assert_rows(localize_video(_video(np.ones(6), magnitudes=seq), magnitude),
                 [(0, 0.7, 0.64, 1.92)])


def test_equal_scores_keep_what_the_release_keeps():
    # Threshold 0.25 gives run [1, 4] and 0.5 gives [1, 2], both scored 0.625 + 0.2 and
    # overlapping ("+1" IoU 2.28 / 3.56 = 0.64). The release lists the 0.25 one first, and
    # argsort()[::-1] of a tie visits the later one first, so [1, 2] is kept.
    cfg = LocalizeConfig(**ONE, families=('score',), score_thresholds=(0.25, 0.5),
                         fuse_magnitude=False)
    _assert_rows(localize_video(_video([0, 0.5, 0.75, 0.25, 1]), cfg),
                 [(0, 0.825, 0.64, 1.92)])


def test_families_pool_before_nms():
    cfg = LocalizeConfig(**ONE, score_thresholds=(0.5,), magnitude_thresholds=(0.5,))
    det = localize_video(_video(np.ones(14), magnitudes=SEQ), cfg)
    # One segment found twice; NMS keeps the higher (score-family) one.
    _assert_rows(det, [(0, 1 - 1.625 / 4 + 0.2, 3 * 0.64, 11 * 0.64)])


def test_run_length_rule():
    base = dict(**ONE, families=('score',), score_thresholds=(0.5,), fuse_magnitude=False)
    det = localize_video(_video(SEQ), LocalizeConfig(**base, min_run_length=1))
    # Single positions [12] (outer {11} = 0) and [1] (outer {0} = 0) now count too.
    _assert_rows(det, [(0, 0.875 + 0.2, 12 * 0.64, 13 * 0.64), (0, 0.75 + 0.2, 0.64, 1.28),
                       (0, 1 - 1.625 / 4 + 0.2, 3 * 0.64, 11 * 0.64)])
    assert len(localize_video(_video(SEQ), LocalizeConfig(**base, min_run_length=8)).score) == 1
    assert len(localize_video(_video(SEQ), LocalizeConfig(**base, min_run_length=9)).score) == 0


def test_two_segment_video_extrapolates_unclipped():
    # cas [0, 1]: the upsampled score is the point position itself, up to 47/24 past the end.
    cfg = LocalizeConfig(families=('score',), score_thresholds=(0.49,), fuse_magnitude=False)
    det = localize_video(_video([0.0, 1.0]), cfg)
    k = 16 * 2 / (24 * 2 * 25)
    # Run [12, 47] (12/24 = 0.5 is the first point >= 0.49); outer [3, 12) is below: 0.
    _assert_rows(det, [(0, 29.5 / 24 + 0.2, 12 * k, 48 * k)])


def test_single_segment_video():
    vs = VideoScores(np.array([0.5, 0.3, 0.2]), np.array([[0.5, 0.3, 0.2]]), np.array([5.0]),
                     4.0, 2.0, 1)
    det = localize_video(vs, LocalizeConfig())
    # One time step: the fused score is 0 (max = min), so only the magnitude family (u = 1 on
    # all 24 points, every threshold) proposes [0, 23], scored 0 - 0 + 0.2 * p_act.
    _assert_rows(det, [(0, 0.1, 0, 0.64), (1, 0.06, 0, 0.64), (2, 0.04, 0, 0.64)])


def test_classes_come_in_the_order_the_release_first_finds_them():
    # Class 0 is constant, so its fused score is 0: only the magnitude family (u = 1, run [0, 4])
    # proposes it, after class 1 has proposals from the score family.
    cas = np.array([[0.5, 0], [0.5, 1], [0.5, 1], [0.5, 0.5], [0.5, 0]])
    vs = VideoScores(np.array([0.5, 0.5]), cas, np.ones(5), 1.0, 0.0, 5)
    det = localize_video(vs, LocalizeConfig(**ONE))
    # Class 1: [1, 3] (2.5 / 3, no outer) suppresses its [0, 4] ("+1" IoU 2.92 / 4.2 = 0.695).
    _assert_rows(det, [(1, 2.5 / 3 + 0.1, 0.64, 2.56), (0, 0.1, 0, 3.2)])


def test_softmax_only_ignores_magnitudes_and_the_magnitude_family():
    rng = np.random.default_rng(4)
    cas = rng.random((40, 2))
    cfg = LocalizeConfig(fuse_magnitude=False)
    a = localize_video(VideoScores(np.array([0.6, 0.4]), cas, rng.random(40), 0.9, 0.1, 40),
                           cfg)
    b = localize_video(VideoScores(np.array([0.6, 0.4]), cas, rng.random(40), 0.7, 0.2, 40),
                           cfg)
    assert len(a.score) > 0
    assert _rows(a) == _rows(b)
    only_mag = LocalizeConfig(fuse_magnitude=False, families=('magnitude',))
    assert len(localize_video(VideoScores(np.array([0.6, 0.4]), cas, rng.random(40),
                                              0.9, 0.1, 40), only_mag).score) == 0


# ---------------------------------------------------------------------------------------------
# Seconds (step 8)


def test_seconds_factor_both_conventions():
    cfg = loc.LocalizeConfig.from_config(LocalizeConfig())
    assert loc.seconds_per_position(100, 50, cfg) == pytest.approx(16 * 100 / (24 * 50 * 25))
    dur = loc.LocalizeConfig.from_config(LocalizeConfig(use_duration=True))
    assert loc.seconds_per_position(100, 50, dur, 30.0) == pytest.approx(30 / (24 * 50))
    with pytest.raises(UserError):
        loc.seconds_per_position(100, 50, dur, None)
    # Through a video: T' = 2 of n = 5 segments, the ramp above proposes positions [12, 47].
    base = dict(families=('score',), score_thresholds=(0.49,), fuse_magnitude=False)
    det = localize_video(_video([0.0, 1.0], n=5, duration=10.0), LocalizeConfig(**base))
    np.testing.assert_allclose(det.segments, [[12 / 15, 48 / 15]], rtol=1e-12)
    det = localize_video(_video([0.0, 1.0], n=5, duration=10.0),
                             LocalizeConfig(**base, use_duration=True))
    np.testing.assert_allclose(det.segments, [[12 * 10 / 48, 10.0]], rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# NMS (step 9)


def _release_nms(proposals, thresh):
    """The release's utils.nms, verbatim apart from names."""
    proposals = np.array(proposals)
    x1, x2, scores = proposals[:, 2], proposals[:, 3], proposals[:, 1]
    areas = x2 - x1 + 1
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(proposals[i].tolist())
        xx1 = np.maximum(x1[i], x1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1)
        iou = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(iou < thresh)[0] + 1]
    return keep


def test_nms_plus_one_changes_the_outcome():
    segments = np.array([[0.0, 0.5], [0.25, 0.75]])
    scores = np.array([0.9, 0.8])
    # Plain IoU 0.25 / 0.75 = 0.33 would keep both; "+1": 1.25 / (1.5 + 1.5 - 1.25) = 0.71.
    assert loc.nms(segments, scores, 0.6).tolist() == [0]
    assert loc.nms(segments, scores, 0.72).tolist() == [0, 1]


def test_nms_suppresses_at_equal_iou():
    segments = np.array([[1.0, 5.0], [0.0, 4.0], [20.0, 21.0]])
    scores = np.array([0.5, 0.9, 0.7])
    assert loc.nms(segments, scores, 4 / 6).tolist() == [1, 2]  # IoU = 4 / 6 exactly
    assert loc.nms(segments, scores, 4 / 6 + 1e-9).tolist() == [1, 2, 0]


def test_nms_matches_the_release_including_ties():
    rng = np.random.default_rng(5)
    for trial in range(60):
        num = int(rng.integers(1, 400))
        starts = rng.random(num) * 40
        segments = np.stack([starts, starts + rng.exponential(1.5, num)], axis=1)
        segments[rng.random(num) < 0.2] = segments[0]  # duplicates
        scores = np.round(rng.random(num), 1)  # many exact ties
        iou = (0.6, 0.3, 0.9, 1.0)[trial % 4]
        proposals = np.concatenate([np.zeros((num, 1)), scores[:, None], segments], axis=1)
        kept = loc.nms(segments, scores, iou)
        assert proposals[kept].tolist() == _release_nms(proposals, iou)


# ---------------------------------------------------------------------------------------------
# The whole video against a literal port of the release


def _release_oic(t_list, wtcam, final_score, c_pred, t_factor, lam=0.25, gamma=0.2):
    """utils.get_proposal_oic of the release, per class and per run (wtcam is (L, K))."""
    temp = []
    for i in range(len(t_list)):
        c_temp = []
        temp_list = t_list[i]
        if temp_list.any():
            grouped = np.split(temp_list, np.where(np.diff(temp_list) != 1)[0] + 1)
            for group in grouped:
                if len(group) < 2:
                    continue
                inner_score = np.mean(wtcam[group, i])
                len_proposal = len(group)
                outer_s = max(0, int(group[0] - lam * len_proposal))
                outer_e = min(int(wtcam.shape[0] - 1), int(group[-1] + lam * len_proposal))
                outer_list = (list(range(outer_s, int(group[0])))
                              + list(range(int(group[-1] + 1), outer_e + 1)))
                outer_score = 0 if len(outer_list) == 0 else np.mean(wtcam[outer_list, i])
                c_score = inner_score - outer_score + gamma * final_score[c_pred[i]]
                c_temp.append([c_pred[i], c_score, group[0] * t_factor,
                               (group[-1] + 1) * t_factor])
            temp.append(c_temp)
    return temp


def _release_localize(vs):
    """test.py of the release for one video, default settings, in NumPy."""
    cfg = LocalizeConfig()
    score_np = vs.p_act
    delta = vs.mu_act - vs.mu_bkg
    u = (vs.magnitudes - vs.mu_bkg) / (delta if delta > 0 else 1)
    u[u > 1], u[u < 0] = 1, 0
    s = vs.cas_softmax * u[:, None]
    max_val, min_val = np.maximum(s.max(0), 0), np.maximum(s.min(0), 0)
    d = max_val - min_val
    d[d <= 0] = 1
    cas = (s - min_val) / d
    cas[cas > 1], cas[cas < 0] = 1, 0
    pred = np.where(score_np >= 0.2)[0]
    if len(pred) == 0:
        pred = np.array([np.argmax(score_np)])
    num_segments = cas.shape[0]
    cas_pred = _hand_upsample(cas[:, pred], 24)
    mag_pred = _hand_upsample(np.repeat(u[:, None], len(pred), axis=1), 24)
    t_factor = (16 * vs.num_segments) / (24 * num_segments * 25)
    proposal_dict = {}

    def add(proposals):
        for c_temp in proposals:
            if c_temp:  # the release would raise IndexError on an empty class list here
                proposal_dict.setdefault(c_temp[0][0], []).extend(c_temp)

    for thr in cfg.localize.score_thresholds:
        cas_temp = cas_pred.copy()
        cas_temp[cas_temp < thr] = 0
        seg_list = [np.where(cas_temp[:, c] > 0)[0] for c in range(len(pred))]
        add(_release_oic(seg_list, cas_temp, score_np, pred, t_factor))
    for thr in cfg.localize.magnitude_thresholds:
        mag_temp = mag_pred.copy()
        mag_temp[mag_temp < thr] = 0
        seg_list = [np.where(mag_temp[:, c] > 0)[0] for c in range(len(pred))]
        add(_release_oic(seg_list, cas_pred, score_np, pred, t_factor))
    return [p for c in proposal_dict for p in _release_nms(proposal_dict[c], 0.6)]


def _random_video(rng, n, num_classes=20, smooth=True, strong=None):
    """Scores of a video with n original segments, sampled to T' = min(n, 750)."""
    t = min(n, 750)
    logits = rng.normal(size=(t, num_classes))
    mags = rng.gamma(2.0, 20.0, t)
    if smooth:
        kernel = np.ones(9) / 9
        logits = 6 * np.stack([np.convolve(col, kernel, 'same') for col in logits.T], axis=1)
        mags = np.convolve(mags, kernel, 'same')
    cas = np.exp(logits - logits.max(1, keepdims=True))
    cas /= cas.sum(1, keepdims=True)
    # 0 to 3 strong classes: 0 leaves every p_act < 0.2 (arg-max fallback), 3 gives ~0.3 each.
    z = rng.normal(size=num_classes) * 0.5
    strong = int(rng.integers(0, 4)) if strong is None else strong
    z[rng.choice(num_classes, strong, replace=False)] += 4
    p_act = np.exp(z) / np.exp(z).sum()
    ranked = np.sort(mags)
    return VideoScores(p_act, cas, mags, float(ranked[-max(1, t // 9):].mean()),
                       float(ranked[:max(1, t // 4)].mean()), n)


def _assert_same_as_release(vs):
    det = localize_video(vs, LocalizeConfig())
    ref = np.array(_release_localize(vs)).reshape(-1, 4)
    assert det.class_idx.tolist() == ref[:, 0].astype(int).tolist()
    np.testing.assert_allclose(det.score, ref[:, 1], rtol=0, atol=1e-10)
    np.testing.assert_allclose(det.segments, ref[:, 2:], rtol=1e-13, atol=0)
    return len(ref)


def test_localize_video_matches_the_release_on_real_lengths(thumos14_dir):
    with open(os.path.join(thumos14_dir, 'durations.json')) as f:
        durations = json.load(f)
    with open(os.path.join(thumos14_dir, 'split_test.txt')) as f:
        names = [line.strip() for line in f if line.strip()]
    lengths = sorted(int(durations[v]['duration'] * 25 / 16) for v in names)
    rng = np.random.default_rng(6)
    picked = lengths[:2] + lengths[-2:] + list(rng.choice(lengths[2:-2], 8, replace=False))
    total = 0
    for i, n in enumerate(picked):
        vs = _random_video(rng, int(n), smooth=i % 3 != 2, strong=i % 4)
        total += _assert_same_as_release(vs)
    assert total > 500  # the comparison saw plenty of detections


def test_localize_video_matches_the_release_on_short_videos():
    rng = np.random.default_rng(7)
    for n in (2, 2, 3, 5, 13):
        _assert_same_as_release(_random_video(rng, n, num_classes=4, smooth=False))


# ---------------------------------------------------------------------------------------------
# Results file (step 10) and input checks


def test_localize_writes_activitynet_results(tmp_path):
    seq = [0, 1, 1, 0.5, 0]
    videos = {'v2': _video(seq, p_act=[0.9]), 'v1': _video([0.0, 0.25], p_act=[0.9])}
    results = localize(videos, ['HighJump'], LocalizeConfig(**ONE, fuse_magnitude=False))
    assert results['version'].startswith('wtal_jax ')
    assert results['external_data'] == {'used': True, 'details': 'I3D features (Kinetics-400)'}
    assert list(results['results']) == ['v2', 'v1']
    first = results['results']['v2'][0]
    assert set(first) == {'label', 'score', 'segment'} and first['label'] == 'HighJump'
    assert type(first['score']) is float and all(type(x) is float for x in first['segment'])
    path = os.path.join(tmp_path, 'out', 'results.json')
    loc.write_results(path, results)
    with open(path) as f:
        assert json.load(f) == results


def test_bad_input_raises_user_error():
    good = _video([0, 1, 1, 0.5, 0], p_act=[0.9])
    with pytest.raises(UserError, match='2 class names'):
        localize({'v': good}, ['a', 'b'])
    bad = [good._replace(magnitudes=np.ones(4)), good._replace(cas_softmax=np.ones((5, 2))),
           good._replace(num_segments=3), good._replace(mu_act=float('nan')),
           good._replace(cas_softmax=np.full((5, 1), np.inf))]
    for vs in bad:
        with pytest.raises(UserError, match='^v7: '):
            localize({'v7': vs}, ['a'])
    with pytest.raises(UserError, match='^v: .*duration'):
        localize({'v': good}, ['a'], LocalizeConfig(use_duration=True))


def test_localization_imports_neither_jax_nor_scipy():
    code = ('import sys, wtal_jax.postprocess.localization; '
            'print(sorted({"jax", "scipy", "torch"} & {m.split(".")[0] for m in sys.modules}))')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=root,
                         check=True).stdout
    assert out.strip() == '[]'
