"""Tests of BaS-Net's localisation (SPEC §8.6) and video accuracy against the release's oracle
(``tests/basnet_release.py``: ``release_detect``, ``release_test``, ``release_accuracy``).

Our side is ``METHOD.scores`` (the suppression branch's scores) and the generic
``localization.localize``. Where the release raises IndexError (a localised class without a
proposal at some threshold) the port skips that class at that threshold: the oracle's
``on_crash='skip_threshold'``. Everywhere else the two must agree: the same videos, labels and
order, scores within 1e-10 absolute and segments within 1e-13 relative (as UM's test).
"""

import json
import os

import numpy as np
import pytest

import basnet_release as rel
from wtal_jax import config
from wtal_jax.method.basnet import METHOD
from wtal_jax.method.basnet import scores as basnet_scores
from wtal_jax.postprocess import localization as loc
from wtal_jax.postprocess.average_precision import video_accuracy

pytest.importorskip('scipy', reason='the release upsamples with scipy interp1d')

C = len(rel.THUMOS14_CLASSES)


def hp_of(**settings):
    """BaS-Net's default config (the release's), frozen, with these ``localize`` settings."""
    cfg = config.default_config('basnet')
    for key, value in settings.items():
        if key == 'num_segments':
            cfg.data.num_segments = value
        else:
            cfg.localize[key] = value
    config.validate(cfg)
    return config.frozen(cfg)


HP = hp_of()


def video_scores(p_supp, cas_supp, n, hp=HP):
    """Our scores of one video from its suppression-branch outputs, as inference gives them."""
    out = loc.VideoOutput({'p_supp': p_supp, 'cas_supp': cas_supp,
                           'weights': np.ones(len(cas_supp), np.float32)},
                          length=len(cas_supp), num_segments=n)
    return METHOD.scores(out, hp=hp)


def port_results(videos, hp=HP):
    """videos: {name: (p_supp, cas_supp, n)} -> our results dict's 'results'."""
    scored = {name: video_scores(*v, hp=hp) for name, v in videos.items()}
    return loc.localize(scored, hp.data.class_names,
                        loc.LocalizeConfig.from_config(hp))['results']


def port_detect(p_supp, cas_supp, n, hp=HP):
    """Our detections of one video, or None where it gets no key."""
    return port_results({'v': (p_supp, cas_supp, n)}, hp).get('v')


def oracle(p_supp, cas_supp, n, **kwargs):
    return rel.release_detect(p_supp, cas_supp, n, on_crash='skip_threshold',
                              num_segments=len(cas_supp), **kwargs)


def assert_same_detections(got, want):
    """Same labels in the same order, scores within 1e-10, segments within 1e-13 relative."""
    if want is None:
        assert got is None, f'the release writes no key; ours has {len(got)} detections'
        return 0
    assert got is not None, 'the release has a key for this video; ours has none'
    assert [d['label'] for d in got] == [d['label'] for d in want]
    if want:
        np.testing.assert_allclose([d['score'] for d in got], [d['score'] for d in want],
                                   rtol=0, atol=1e-10)
        np.testing.assert_allclose([d['segment'] for d in got], [d['segment'] for d in want],
                                   rtol=1e-13, atol=0)
    return len(want)


def softmax(z):
    e = np.exp(z - z.max())
    return (e / e.sum()).astype(np.float32)


def random_video(rng, n, *, num_segments=750, strong=None, smooth=True, quantise=False):
    """The suppression branch's outputs of a video of n original segments, test-sampled to
    ``num_segments`` (a shorter video's rows repeat, as its repeated features give plateaus):
    p_supp (C+1,) and cas_supp (T, C+1), float32.

    0-3 strong classes (0: no key; 1: p ~ 0.7; 3: p ~ 0.3 each). Class offsets spread the
    columns so that some end up entirely negative (the release's crash) and some entirely
    positive. ``quantise`` rounds to 1/4: runs and proposal scores then tie exactly.
    """
    rows = min(n, num_segments)
    logits = rng.normal(size=(rows, C + 1))
    if smooth:
        kernel = np.ones(9) / 9
        logits = 6 * np.stack([np.convolve(col, kernel, 'same') for col in logits.T], axis=1)
    logits += rng.normal(size=C + 1) * 3
    if quantise:
        logits = np.round(4 * logits) / 4
    cas = logits[rel.release_sample_test(n, num_segments)] if n < num_segments else logits
    z = rng.normal(size=C + 1) * 0.5
    strong = int(rng.integers(0, 4)) if strong is None else strong
    z[rng.choice(C, strong, replace=False)] += 4
    return softmax(z), cas.astype(np.float32)


def thumos_test_lengths(folder):
    with open(os.path.join(folder, 'durations.json')) as f:
        durations = json.load(f)
    with open(os.path.join(folder, 'split_test.txt')) as f:
        names = [line.strip() for line in f if line.strip()]
    return sorted(int(durations[v]['duration'] * 25 / 16) for v in names)


# ---------------------------------------------------------------------------------------------
# The scores (steps 1-4)


def test_scores_are_the_suppression_branch_binarised_and_normalised_unclipped():
    p = np.array([0.3, 0.25, 0.2499999, 0.1, 0.1500001], np.float32)   # last: background
    cas = np.array([[-1, 1, 3, 0, 9], [0, 3, 3, -2, 9], [2, 2, 3, -1, 9]], np.float32)
    vs = basnet_scores.video_scores(p, cas, num_segments=10, hp=hp_of(skip_first_class_alone=False))
    np.testing.assert_array_equal(vs.p_act, p[:4])     # background dropped, not renormalised
    np.testing.assert_array_equal(vs.classes, [0, 1])  # >= 0.25, no arg-max fallback
    np.testing.assert_array_equal(vs.class_score, [1, 1, 0, 0])
    # per class: max, min through ReLU, delta <= 0 -> 1, no clipping (-0.5 stays)
    np.testing.assert_array_equal(vs.scores, [[-0.5, 0, 0, 0], [0, 1, 0, -2], [1, 0.5, 0, -1]])
    assert vs.scores.dtype == np.float32
    assert [f.thresholds for f in vs.families] == [HP.localize.score_thresholds]
    assert all(f.sequence is None for f in vs.families)
    none = basnet_scores.video_scores(np.array([0.2, 0.1, 0.7], np.float32), cas[:, :3],
                                      num_segments=10, hp=HP)
    assert none.classes.size == 0                      # UM would localise the arg-max


def test_class_zero_alone_is_skipped_unless_the_quirk_is_closed():
    assert basnet_scores.localised_classes(np.array([0.9, 0.1]), 0.25,
                                           skip_first_class_alone=True).size == 0
    np.testing.assert_array_equal(basnet_scores.localised_classes(
        np.array([0.9, 0.1]), 0.25, skip_first_class_alone=False), [0])
    np.testing.assert_array_equal(basnet_scores.localised_classes(
        np.array([0.9, 0.3]), 0.25, skip_first_class_alone=True), [0, 1])


# ---------------------------------------------------------------------------------------------
# One video against the release (steps 4-10)


def test_tiny_video_by_hand():
    """The oracle's hand-checked tiny case (T = 4, x2, thresholds 0 and 0.6) through ours."""
    cas = np.zeros((4, 3), np.float32)
    cas[:, 1] = [0, 2, 1, -1]
    p = np.array([0.1, 0.6, 0.3], np.float32)
    cfg = config.default_config('basnet')
    cfg.data.num_segments, cfg.data.class_names = 4, ('A', 'B')
    cfg.localize.upsample, cfg.localize.score_thresholds = 2, (0.0, 0.6)
    config.validate(cfg)
    got = port_detect(p, cas, 10, hp=config.frozen(cfg))
    assert [d['label'] for d in got] == ['B', 'B']
    np.testing.assert_allclose([d['score'] for d in got], [1.075, 0.8875], rtol=1e-12)
    np.testing.assert_allclose([d['segment'] for d in got], [[1.6, 3.2], [0.8, 4.0]],
                               rtol=1e-12)


def test_matches_the_release_on_real_thumos14_lengths(thumos14_dir):
    lengths = thumos_test_lengths(thumos14_dir)
    rng = np.random.default_rng(8)
    picked = lengths[:2] + lengths[-2:] + [int(n) for n in rng.choice(lengths[2:-2], 8,
                                                                    replace=False)]
    assert min(picked) < 750 < max(picked)
    total, keys = 0, 0
    for i, n in enumerate(picked):
        p, cas = random_video(rng, n, strong=[1, 2, 3][i % 3], smooth=i % 4 != 3,
                              quantise=i % 5 == 4)
        want = oracle(p, cas, n)
        total += assert_same_detections(port_detect(p, cas, n), want)
        keys += want is not None
    assert keys >= len(picked) - 2 and total > 500   # plenty of detections compared


def test_matches_the_release_on_short_videos_and_another_T():
    rng = np.random.default_rng(9)
    total = 0
    for n in (1, 2, 3, 5, 13, 749, 750, 751):
        p, cas = random_video(rng, n, strong=2, smooth=n > 5)
        total += assert_same_detections(port_detect(p, cas, n), oracle(p, cas, n))
    # T = 40 (data.num_segments): the seconds follow T' = 40
    hp = hp_of(num_segments=40)
    for n in (7, 40, 97):
        p, cas = random_video(rng, n, num_segments=40, strong=3, smooth=False)
        total += assert_same_detections(port_detect(p, cas, n, hp=hp), oracle(p, cas, n))
    assert total > 100


def test_videos_without_a_class_get_no_key():
    rng = np.random.default_rng(10)
    p, cas = random_video(rng, 300, strong=0)
    assert (p[:C] < 0.25).all()
    assert oracle(p, cas, 300) is None and port_detect(p, cas, 300) is None
    # one class exactly at 0.25 (float32): localised in both
    p = np.full(C + 1, 0.75 / C, np.float32)
    p[7] = 0.25
    want = oracle(p, cas, 300)
    assert want and {d['label'] for d in want} == {'Diving'}
    assert_same_detections(port_detect(p, cas, 300), want)


def test_the_class_zero_quirk():
    rng = np.random.default_rng(11)
    _, cas = random_video(rng, 900)
    p = np.full(C + 1, 0.01, np.float32)
    p[0] = 0.8
    assert oracle(p, cas, 900) is None and port_detect(p, cas, 900) is None
    # closed: class 0's detections are those the release gives it beside another class
    alone = port_detect(p, cas, 900, hp=hp_of(skip_first_class_alone=False))
    p_with = p.copy()
    p_with[4] = 0.3
    both = oracle(p_with, cas, 900)
    assert_same_detections(port_detect(p_with, cas, 900), both)
    assert {d['label'] for d in both} == {'BaseballPitch', 'CliffDiving'}
    assert_same_detections(alone, [d for d in both if d['label'] == 'BaseballPitch'])


def _crash_video(column, *, other=True):
    """Class 3 localised with the given column; with ``other``, class 9 too, on a smooth
    column with ordinary detections."""
    cas = np.full((750, C + 1), -1.0, np.float32)
    cas[:, 3] = column
    if other:
        cas[:, 9] = np.sin(np.arange(750) / 40.0)
    p = np.full(C + 1, 0.2 / C, np.float32)
    p[3] = 0.4
    if other:
        p[9] = 0.4
    return p, cas


def _decreasing(start):
    return (start - np.arange(750) / 750.0).astype(np.float32)


CRASHES = {
    # nothing > 0 after normalisation (max <= 0), a decreasing tail: never a proposal
    'all negative': (_decreasing(-1.0), 0.0),
    # a constant positive column normalises to 0 everywhere
    'constant': (np.full(750, 2.0, np.float32), 0.0),
    # [1, -19, -19, ...]: position 1 (x24) is 1 - 20/24 = 0.1667, so thresholds up to 0.15
    # see the run [0, 1] and the later ones only position 0, which is never a proposal
    'later thresholds': (np.array([1.0] + [-19.0] * 749, np.float32), 0.175),
}


@pytest.mark.parametrize('case', list(CRASHES))
@pytest.mark.parametrize('other', [True, False])
def test_release_crash_cases_skip_the_class_at_that_threshold(case, other):
    column, first_crash = CRASHES[case]
    p, cas = _crash_video(column, other=other)
    with pytest.raises(rel.ReleaseCrash) as info:
        rel.release_detect(p, cas, 800)
    assert info.value.class_index == 3
    assert info.value.threshold == pytest.approx(first_crash)
    want = oracle(p, cas, 800)
    got = port_detect(p, cas, 800)
    assert_same_detections(got, want)
    labels = {d['label'] for d in got}
    assert ('GolfSwing' in labels) == other     # class 9's detections are kept
    assert ('CleanAndJerk' in labels) == (case == 'later thresholds')   # class 3
    if not other and case != 'later thresholds':
        assert got == []                         # a key, without detections, as the closure


def test_many_videos_results_and_accuracy_match_the_release(thumos14_dir):
    """release_test over a set of videos: the same keys in the same order, the same
    detections, and the same video accuracy."""
    lengths = thumos_test_lengths(thumos14_dir)
    rng = np.random.default_rng(12)
    videos, ours = [], {}
    for i, n in enumerate(rng.choice(lengths, 12, replace=False)):
        p, cas = random_video(rng, int(n), strong=i % 4)
        if i == 5:
            p = np.full(C + 1, 0.01, np.float32)
            p[0] = 0.8                           # class 0 alone: no key
        label = (p[:C] >= 0.25).astype(np.float32)
        if i % 3 == 0:
            c = int(rng.integers(C))
            label[c] = 1 - label[c]
        videos.append((f'video_{i}', label, p, cas, int(n)))
        ours[f'video_{i}'] = (p, cas, int(n))
    want, want_acc = rel.release_test(videos, on_crash='skip_threshold')
    got = port_results(ours)
    assert list(got) == list(want['results'])
    assert 'video_5' not in got and len(got) < len(videos)
    for name in got:
        assert_same_detections(got[name], want['results'][name])
    p_act = np.stack([video_scores(*ours[v[0]]).p_act for v in videos])
    labels = np.stack([v[1] for v in videos])
    assert video_accuracy(p_act, labels, HP.eval.class_threshold) == pytest.approx(want_acc,
                                                                                   abs=1e-15)
    assert 0 < want_acc < 1


def test_video_accuracy_at_the_class_threshold_is_the_releases():
    rng = np.random.default_rng(13)
    p = rng.dirichlet(np.ones(C + 1) * 0.3, size=200).astype(np.float32)
    p[::7, 2] = 0.25                                # exactly at the threshold: predicted
    predicted = p[:, :C] >= 0.25
    labels = predicted.astype(np.float32)
    flip = np.flatnonzero(rng.random(200) < 0.4)
    c = rng.integers(0, C, flip.size)
    labels[flip, c] = 1 - labels[flip, c]
    want = rel.release_accuracy(labels, p)
    p_act = np.stack([video_scores(row, np.zeros((750, C + 1), np.float32), 750).p_act
                      for row in p])
    assert video_accuracy(p_act, labels, HP.eval.class_threshold) == pytest.approx(want,
                                                                                   abs=1e-15)
    assert 0.3 < want < 0.9
    assert video_accuracy(p_act, labels, 0.2) != pytest.approx(want)   # the threshold matters
