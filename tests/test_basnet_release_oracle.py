"""Tests of ``tests/basnet_release.py``, the oracle of the BaS-Net release (SPEC §8).

The oracle is what the JAX port is tested against, so it is itself checked here against
hand-computed cases and independent NumPy computations: a wrong oracle must not silently pass a
wrong port.
"""

import numpy as np
import pytest

import basnet_release as rel

TORCH_REASON = "the BaS-Net release oracle's model and loss need torch: pip install -e '.[torch]'"


@pytest.fixture(scope='module')
def torch():
    return pytest.importorskip('torch', reason=TORCH_REASON)


@pytest.fixture
def scipy():
    return pytest.importorskip('scipy', reason='the release upsamples with scipy interp1d')


needs_scipy = pytest.mark.usefixtures('scipy')


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# Constants and sampling (SPEC §8.1, §8.6 steps 5-6)

@needs_scipy
def test_thresholds_and_upsampling_grid_are_the_releases():
    assert rel.ACT_THRESH.shape == (10,)
    np.testing.assert_allclose(rel.ACT_THRESH, [0.025 * i for i in range(10)], atol=1e-15)
    # y_t = t is reproduced (to rounding) by interpolation, and by extrapolation past t = 749
    up = rel.release_upgrade_resolution(np.arange(750.0).reshape(750, 1, 1), 24)
    assert up.shape == (18000, 1, 1)
    np.testing.assert_allclose(up[:, 0, 0], np.arange(18000) / 24, rtol=0, atol=1e-9)
    assert up[17976, 0, 0] == 749 and up[17999, 0, 0] > 749.95   # the last 23 are extrapolated


def test_test_sampling_always_gives_T_indices():
    np.testing.assert_array_equal(rel.release_sample_test(3, 5), [0, 0, 1, 1, 2])
    np.testing.assert_array_equal(rel.release_sample_test(5, 5), [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(rel.release_sample_test(10, 4), [0, 2, 5, 7])
    idx = rel.release_sample_test(1600, 750)
    assert idx.shape == (750,) and idx[1] == 2 and idx[3] == 6 and idx[749] == 1597


# ---------------------------------------------------------------------------------------------
# minmax_norm (SPEC §8.6 step 4)

def test_minmax_norm_keeps_negative_values_and_guards_delta():
    cas = np.array([[-1., 1., -3., 2., 5.],
                    [0., 3., -1., 2., 6.],
                    [2., 2., -2., 2., 7.]], dtype=np.float32)[None]
    out = rel.release_minmax_norm(cas)
    want = np.array([[-0.5, 0., -3., 0., 0.],    # min < 0 -> min 0, not clipped
                     [0., 1., -1., 0., 0.5],      # all negative -> delta 0 -> 1: unchanged
                     [1., 0.5, -2., 0., 1.]])     # constant 2 -> delta 0 -> 1: all 0
    np.testing.assert_array_equal(out[0], want)
    assert out.dtype == np.float32


# ---------------------------------------------------------------------------------------------
# get_proposal_oic (SPEC §8.6 step 7)

def _oic(positions, wtcam, score=1.0, v_len=750):
    """One class (index 2) localised; candidate positions given; wtcam (P,) for that class."""
    final_score = np.array([0., 0., score], dtype=np.float32)
    tlist = [(np.asarray(positions, dtype=np.int64),)]
    return rel.release_proposal_oic(tlist, wtcam.reshape(-1, 1, 1), final_score, np.array([2]),
                                    24, v_len, 25, 750)


def test_oic_single_point_proposal_is_kept():
    w = np.zeros(18000)
    w[[4, 5, 6]] = [0.3, 0.9, 0.1]
    (props,) = _oic([5], w)
    # L = 1: outer = [int(4.75), 5) U (5, int(5.25)] = {4}
    f = 16 * 750 / (24 * 750 * 25)
    assert len(props) == 1
    cls, score, start, end = props[0]
    assert cls == 2
    assert score == pytest.approx(0.9 - 0.3 + 0.2, abs=1e-12)
    assert (start, end) == (pytest.approx(5 * f), pytest.approx(6 * f))


def test_oic_outer_window_clipped_at_zero_and_at_17999():
    w = np.linspace(0.0, 1.0, 18000) ** 2
    # run [1..6], L = 6: int(1 - 1.5) = int(-0.5) = 0 -> outer {0} U {7} (int(6 + 1.5) = 7)
    # run [17986..17997], L = 12: outer {17983, 17984, 17985} U {17998, 17999} (int(18000) -> 17999)
    # run [17990..17999], L = 10: outer {17987, 17988, 17989} only
    first = _oic(list(range(1, 7)), w)[0][0]
    assert first[1] == pytest.approx(w[1:7].mean() - w[[0, 7]].mean() + 0.2, abs=1e-12)
    mid = _oic(list(range(17986, 17998)), w)[0][0]
    assert mid[1] == pytest.approx(
        w[17986:17998].mean() - w[[17983, 17984, 17985, 17998, 17999]].mean() + 0.2, abs=1e-12)
    last = _oic(list(range(17990, 18000)), w)[0][0]
    assert last[1] == pytest.approx(w[17990:].mean() - w[17987:17990].mean() + 0.2, abs=1e-12)
    f = 16 * 1000 / (24 * 750 * 25)
    assert _oic(list(range(17990, 18000)), w, v_len=1000)[0][0][2:] == [
        pytest.approx(17990 * f), pytest.approx(18000 * f)]


def test_oic_class_term_is_the_binarised_score_and_runs_are_split():
    w = np.zeros(18000)
    w[10:13] = 0.5
    w[20] = 0.7
    (props,) = _oic([10, 11, 12, 20], w, score=1.0)
    assert len(props) == 2
    # run [10..12], L = 3: outer [int(9.25), 10) U (12, int(12.75)] = {9}: 0.5 - 0 + 0.2
    assert props[0][1] == pytest.approx(0.7, abs=1e-12)
    # run [20]: outer {19}: 0.7 - 0 + 0.2, exactly NumPy 1.x's float64 0.2 (not float32's)
    assert props[1][1] == 0.7 + 0.2
    (zero_class,) = _oic([10, 11, 12, 20], w, score=0.0)
    assert zero_class[1][1] == 0.7


def test_oic_only_position_zero_or_nothing_gives_an_empty_list():
    w = np.zeros(18000)
    w[0] = 1.0
    assert _oic([0], w) == [[]]
    assert _oic([], w) == [[]]
    (props,) = _oic([0, 1], np.r_[1.0, 0.5, np.zeros(17998)])
    # run [0..1], L = 2: outer [0, 0) U (1, int(1.5)] is empty -> 0
    assert len(props) == 1 and props[0][1] == pytest.approx(0.75 + 0.2)


# ---------------------------------------------------------------------------------------------
# NMS (SPEC §8.6 step 9)

def test_nms_plus_one_iou_and_threshold_0_7():
    a = [3, 0.9, 0.0, 19.0]
    b = [3, 0.8, 4.0, 23.0]    # +1 IoU with a: 16 / 24 = 0.667
    assert rel.release_nms([b, a], 0.7) == [a, b]
    assert rel.release_nms([b, a], 0.6) == [a]
    # short segments: with "+1" IoU = 1.25 / 1.75 = 0.714 (suppressed); without it 1/3
    c = [0, 0.5, 0.0, 0.5]
    d = [0, 0.4, 0.25, 0.75]
    assert rel.release_nms([c, d], 0.7) == [c]
    # IoU exactly 0.7 (7 / 10) is suppressed: kept only when IoU < thresh
    e = [1, 0.9, 0.0, 9.0]
    g = [1, 0.3, 0.0, 6.0]
    assert rel.release_nms([g, e], 0.7) == [e]
    out = rel.release_nms([g, e], 0.7)[0]
    assert all(type(v) is float for v in out)   # class id comes back as 1.0


# ---------------------------------------------------------------------------------------------
# One video end to end (SPEC §8.6)

def _tiny_video(column, p=(0.1, 0.6, 0.3), column_a=(0., 0., 0., 0.)):
    """Classes ('A', 'B') and background; T = 4 segments; cas columns A and B given."""
    cas = np.zeros((4, 3), dtype=np.float32)
    cas[:, 0] = column_a
    cas[:, 1] = column
    return np.array(p, dtype=np.float32), cas


TINY = dict(scale=2, num_segments=4, act_thresh=np.array([0.0, 0.6]), class_names=('A', 'B'))


@needs_scipy
def test_detect_tiny_video_by_hand():
    p, cas = _tiny_video([0., 2., 1., -1.])
    # normalised [0, 1, 0.5, -0.5]; x2: [0, .5, 1, .75, .5, 0, -.5, -1] (the last extrapolated)
    # thr 0:   run [1..4], inner 0.6875, outer {0, 5} = 0     -> 0.8875, [0.8, 4.0] s
    # thr 0.6: run [2..3], inner 0.875,  outer {1} = 0 (cut)  -> 1.075,  [1.6, 3.2] s
    # (seconds: f = 16 * 10 / (2 * 4 * 25) = 0.8); +1 IoU = 2.6 / 4.2 = 0.62: both kept at 0.7
    out = rel.release_detect(p, cas, 10, **TINY)
    assert [d['label'] for d in out] == ['B', 'B']
    assert [d['score'] for d in out] == [pytest.approx(1.075), pytest.approx(0.8875)]
    assert out[0]['segment'] == [pytest.approx(1.6), pytest.approx(3.2)]
    assert out[1]['segment'] == [pytest.approx(0.8), pytest.approx(4.0)]
    assert len(rel.release_detect(p, cas, 10, nms_thresh=0.6, **TINY)) == 1
    # a value equal to the threshold stays (only values < thr are zeroed): at 0.5 the run is
    # still [1..4] (0.5 at both ends), not [2..3]
    at_half = dict(TINY, act_thresh=np.array([0.5]))
    assert rel.release_detect(p, cas, 10, **at_half) == [
        {'label': 'B', 'score': pytest.approx(0.8875), 'segment': [pytest.approx(0.8), 4.0]}]


@needs_scipy
def test_detect_class_threshold_is_0_25_inclusive():
    column = [0., 2., 1., -1.]
    p, cas = _tiny_video(column, p=(0.5, 0.25, 0.25), column_a=column)
    out = rel.release_detect(p, cas, 10, **TINY)   # classes 0 and 1 both localised (p >= 0.25)
    assert [d['label'] for d in out] == ['A', 'A', 'B', 'B']
    assert [d['score'] for d in out] == [pytest.approx(s) for s in (1.075, 0.8875) * 2]
    p, cas = _tiny_video([0., 2., 1., -1.], p=(0.1, 0.2499, 0.6501))
    assert rel.release_detect(p, cas, 10, **TINY) is None   # no class, no arg-max fallback


@needs_scipy
def test_detect_skips_a_video_whose_only_class_is_0():
    p = np.full(21, 0.01, dtype=np.float32)
    p[0] = 0.8
    cas = np.random.default_rng(0).normal(size=(750, 21)).astype(np.float32)
    assert rel.release_detect(p, cas, 900) is None
    p[4] = 0.3   # classes 0 and 4: pred = [0, 4] has a non-zero index, both localised
    out = rel.release_detect(p, cas, 900)
    assert {d['label'] for d in out} == {'BaseballPitch', 'CliffDiving'}
    labels = [d['label'] for d in out]
    assert labels == sorted(labels, key=rel.THUMOS14_CLASSES.index)


@needs_scipy
def test_detect_release_crash_cases():
    # all non-positive, decreasing tail: normalisation leaves nothing > 0
    p, cas = _tiny_video([-1., -2., -3., -4.])
    with pytest.raises(rel.ReleaseCrash) as info:
        rel.release_detect(p, cas, 10, **TINY)
    assert info.value.class_index == 1 and info.value.threshold == 0.0
    # constant positive column: (cas - min) / 1 = 0 everywhere (max > 0, yet it crashes)
    p, cas = _tiny_video([2., 2., 2., 2.])
    with pytest.raises(rel.ReleaseCrash):
        rel.release_detect(p, cas, 10, **TINY)
    # only position 0 is positive: [1, -20, ...] x2 -> [1, -9.5, -20, ...]
    p, cas = _tiny_video([1., -20., -20., -20.])
    with pytest.raises(rel.ReleaseCrash) as info:
        rel.release_detect(p, cas, 10, **TINY)
    assert info.value.threshold == 0.0   # position 0 is never a proposal (temp_list.any())


@needs_scipy
def test_detect_crash_at_a_later_threshold_and_its_closures():
    # normalised [1, -.5, -5, -5]; x2: [1, .25, -.5, -2.75, -5, ...]
    # thr 0: run [0..1] (index 1 is non-zero), inner .625, outer empty -> .825, [0, 1.6] s
    # thr 0.6: only position 0 -> no proposal -> the release's IndexError
    p, cas = _tiny_video([1., -0.5, -5., -5.])
    with pytest.raises(rel.ReleaseCrash) as info:
        rel.release_detect(p, cas, 10, **TINY)
    assert info.value.class_index == 1 and info.value.threshold == 0.6
    out = rel.release_detect(p, cas, 10, on_crash='skip_threshold', **TINY)
    assert out == [{'label': 'B', 'score': pytest.approx(0.825),
                    'segment': [0.0, pytest.approx(1.6)]}]
    assert rel.release_detect(p, cas, 10, on_crash='skip_class', **TINY) == []
    with pytest.raises(ValueError, match='on_crash'):
        rel.release_detect(p, cas, 10, on_crash='skip', **TINY)


@needs_scipy
def test_detect_non_positive_column_rescued_by_tail_extrapolation():
    # max_t cas = 0 at the last segment: extrapolation past it is positive, so no crash
    column = np.full(750, -1.0, dtype=np.float32)
    column[-1] = 0.0
    cas = np.zeros((750, 21), dtype=np.float32)
    cas[:, 3] = column
    p = np.full(21, 0.01, dtype=np.float32)
    p[3] = 0.9
    out = rel.release_detect(p, cas, 750)
    f = 16 * 750 / (24 * 750 * 25)
    # values x - 749 at x = 749 + k/24, k = 1..23: every run ends at position 17999
    assert len(out) >= 1
    assert [d['segment'][1] for d in out] == [pytest.approx(18000 * f)] * len(out)
    assert all(d['label'] == 'CleanAndJerk' for d in out)


def test_accuracy_is_exact_multilabel_match():
    labels = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0]], dtype=np.float32)
    p = np.array([[0.3, 0.1, 0.25, 0.35],    # {0, 2}: correct
                  [0.3, 0.5, 0.1, 0.1],      # {0, 1}: wrong
                  [0.2, 0.2, 0.2, 0.4]],     # {}: correct
                 dtype=np.float32)
    assert rel.release_accuracy(labels, p) == pytest.approx(2 / 3)
    np.testing.assert_array_equal(rel.release_binarise(p[0]), [1, 0, 1])


@needs_scipy
def test_release_test_builds_the_result_file():
    p1, cas1 = _tiny_video([0., 2., 1., -1.])
    p0, cas0 = _tiny_video([0., 2., 1., -1.], p=(0.6, 0.1, 0.3))    # class 0 only: no key
    res, acc = rel.release_test([('v1', np.array([0., 1.]), p1, cas1, 10),
                                 ('v0', np.array([0., 1.]), p0, cas0, 10)],
                                scale=2, num_segments=4, act_thresh=np.array([0.0, 0.6]),
                                class_names=('A', 'B'))
    assert list(res['results']) == ['v1'] and len(res['results']['v1']) == 2
    assert res['version'] == 'VERSION 1.3' and res['external_data']['used'] is True
    assert acc == 0.5


# ---------------------------------------------------------------------------------------------
# Model and loss (SPEC §8.3, §8.4)

RELEASE_KEYS = {
    'filter_module.conv_1.0.weight', 'filter_module.conv_1.0.bias',
    'filter_module.conv_2.0.weight', 'filter_module.conv_2.0.bias',
    'cas_module.conv_1.0.weight', 'cas_module.conv_1.0.bias',
    'cas_module.conv_2.0.weight', 'cas_module.conv_2.0.bias',
    'cas_module.conv_3.0.weight'}


def _np_conv(x, w, b):
    """x (T, Din), w (Dout, Din, k) with 'same' zero padding, b (Dout,) or None -> (T, Dout)."""
    k = w.shape[2]
    xp = np.pad(x, ((k // 2, k // 2), (0, 0)))
    out = sum(xp[j:j + len(x)] @ w[:, :, j].T for j in range(k))
    return out if b is None else out + b


def _np_forward(sd, x, k):
    """The release's eval-mode forward in float64 NumPy, one video x (T, D)."""
    leaky = lambda v: np.where(v > 0, v, 0.01 * v)   # noqa: E731
    h = leaky(_np_conv(x, sd['filter_module.conv_1.0.weight'], sd['filter_module.conv_1.0.bias']))
    w = 1 / (1 + np.exp(-_np_conv(h, sd['filter_module.conv_2.0.weight'],
                                  sd['filter_module.conv_2.0.bias'])))

    def cas(inp):
        h = leaky(_np_conv(inp, sd['cas_module.conv_1.0.weight'], sd['cas_module.conv_1.0.bias']))
        h = leaky(_np_conv(h, sd['cas_module.conv_2.0.weight'], sd['cas_module.conv_2.0.bias']))
        return _np_conv(h, sd['cas_module.conv_3.0.weight'], None)

    cas_base, cas_supp = cas(x), cas(w * x)
    video = lambda a: _softmax(-np.sort(-a, axis=0)[:k].mean(axis=0))   # noqa: E731
    return video(cas_base), cas_base, video(cas_supp), cas_supp, w


def test_model_keys_shapes_and_forward_against_numpy(torch):
    torch.manual_seed(0)
    net = rel.release_model(torch, feature_dim=6, num_classes=3, num_segments=16).eval()
    sd = {k: v.double().numpy() for k, v in net.state_dict().items()}
    assert set(sd) == RELEASE_KEYS
    assert sd['cas_module.conv_2.0.weight'].shape == (2048, 2048, 3)
    assert sd['cas_module.conv_3.0.weight'].shape == (4, 2048, 1)
    assert sd['filter_module.conv_1.0.weight'].shape == (512, 6, 1)
    assert net.k == 2
    x = np.random.default_rng(1).normal(size=(2, 16, 6)).astype(np.float32)
    with torch.no_grad():
        got = [t.numpy() for t in net(torch.from_numpy(x))]
    for b in range(2):
        want = _np_forward(sd, x[b].astype(np.float64), 2)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g[b], w, rtol=2e-4, atol=2e-6)
    state = net.state_dict()
    fresh = rel.release_model(torch, feature_dim=6, num_classes=3, num_segments=16)
    fresh.load_state_dict(state, strict=True)


def test_video_score_is_top_93_of_750_then_softmax(torch):
    torch.manual_seed(1)
    net = rel.release_model(torch, feature_dim=4, num_classes=2, num_segments=750).eval()
    assert net.k == 93
    x = torch.from_numpy(np.random.default_rng(2).normal(size=(1, 750, 4)).astype(np.float32))
    with torch.no_grad():
        p_base, cas_base, p_supp, cas_supp, _ = [t.double().numpy() for t in net(x)]
        # k is fixed at construction: a 40-segment input averages all its 40 (sort + slice)
        short = net(x[:, :40])
    for p, cas in ((p_base, cas_base), (p_supp, cas_supp)):
        top = np.stack([np.sort(cas[0, :, c])[::-1][:93].mean() for c in range(3)])
        np.testing.assert_allclose(p[0], _softmax(top), rtol=1e-5)
    np.testing.assert_allclose(short[2][0].double().numpy(),
                               _softmax(short[3][0].double().numpy().mean(axis=0)), rtol=1e-5)


def test_loss_against_numpy(torch):
    rng = np.random.default_rng(3)
    p_base = _softmax(rng.normal(size=(2, 4)))
    p_supp = _softmax(rng.normal(size=(2, 4)))
    p_supp[1] = [0.0, 1.0, 0.0, 0.0]   # log 0 -> clamped at -100 (BCELoss)
    w = rng.uniform(0.05, 0.95, size=(2, 7, 1))
    y = np.array([[1., 0., 1.], [0., 1., 0.]])

    def bce(p, t):
        return np.mean(-(t * np.maximum(np.log(p), -100)
                         + (1 - t) * np.maximum(np.log(1 - p), -100)))

    with np.errstate(divide='ignore'):
        y_base = np.c_[y, np.ones(2)] / np.c_[y, np.ones(2)].sum(1, keepdims=True)
        y_supp = np.c_[y, np.zeros(2)] / y.sum(1, keepdims=True)
        want_base, want_supp = bce(p_base, y_base), bce(p_supp, y_supp)
    want_norm = np.mean(np.sum(w[:, :, 0], axis=1))
    t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float64))   # noqa: E731
    total, parts = rel.release_loss(torch, (t(p_base), None, t(p_supp), None, t(w)), t(y), 1e-4)
    assert parts['loss_base'].item() == pytest.approx(want_base, rel=1e-12)
    assert parts['loss_supp'].item() == pytest.approx(want_supp, rel=1e-12)
    assert parts['loss_norm'].item() == pytest.approx(want_norm, rel=1e-12)
    assert total.item() == pytest.approx(want_base + want_supp + 1e-4 * want_norm, rel=1e-12)
    assert y_supp[0].tolist() == [0.5, 0, 0.5, 0] and y_base[0].tolist() == [1 / 3, 0, 1 / 3, 1 / 3]
