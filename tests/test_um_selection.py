"""Magnitudes, uncertainty and pseudo action/background selection (SPEC §2 items 3-9) vs NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wtal_jax.method.um import selection

# One compiled program per shape (eager mode would compile every op of every shape: slow).
_select = jax.jit(selection.select, static_argnames=('r_act', 'r_bkg'))


def select(*args, **kwargs):
    """selection.select, compiled, with NumPy outputs (indexing device arrays compiles too)."""
    return jax.tree.map(np.asarray, _select(*args, **kwargs))


# ---------------------------------------------------------------------------------------------
# NumPy reference, one video at a time, written from SPEC §2


def np_softmax(x, axis=-1):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_topk_indices(values, k):
    """Indices of the k largest values; ties go to the lower index (as lax.top_k)."""
    return np.argsort(-np.asarray(values, np.float64), kind='stable')[:k]


def reference_select(cas, mags, feats=None, mask=None, *, r_act, r_bkg):
    """One video: cas (T, C), mags (T,), feats (T, E), mask (T,) or None -> dict of outputs."""
    cas = np.asarray(cas, np.float64)
    mags = np.asarray(mags, np.float64)
    t = len(mags)
    k_act, k_bkg = max(1, t // r_act), max(1, t // r_bkg)
    drop = np.ones(t) if mask is None else np.asarray(mask, np.float64)
    idx_act = np_topk_indices(mags * drop, k_act)
    idx_bkg = np_topk_indices((mags.max() - mags) * drop, k_bkg)
    score_act = np.sort(cas, axis=0)[::-1][:k_act].mean(axis=0)   # per class, its own top k
    score_bkg = cas[idx_bkg].mean(axis=0)
    out = dict(p_act=np_softmax(score_act), p_bkg=np_softmax(score_bkg),
               bkg_softmax=np_softmax(cas, axis=1)[idx_bkg].mean(axis=0),
               mu_act=mags[idx_act].mean(), mu_bkg=mags[idx_bkg].mean(),
               cas_softmax=np_softmax(cas, axis=1), idx_act=idx_act, idx_bkg=idx_bkg)
    if feats is not None:
        feats = np.asarray(feats, np.float64)
        out['feat_act'] = feats[idx_act].mean(axis=0)
        out['feat_bkg'] = feats[idx_bkg].mean(axis=0)
    return out


def random_video(rng, t, c=4, e=6, *, ties=False):
    cas = rng.normal(size=(t, c))
    mags = rng.integers(0, 4, t).astype(float) if ties else rng.uniform(0, 10, t)
    feats = rng.normal(size=(t, e))  # independent of mags: shows which segments were picked
    return cas.astype(np.float32), mags.astype(np.float32), feats.astype(np.float32)


def check_video(sel, row, ref, *, length=None, rtol=1e-5, atol=1e-6):
    length = length or len(ref['cas_softmax'])
    for name in ('p_act', 'p_bkg', 'bkg_softmax', 'feat_act', 'feat_bkg'):
        np.testing.assert_allclose(getattr(sel, name)[row], ref[name], rtol=rtol, atol=atol,
                                   err_msg=name)
    np.testing.assert_allclose(sel.mu_act[row], ref['mu_act'], rtol=rtol, atol=atol)
    np.testing.assert_allclose(sel.mu_bkg[row], ref['mu_bkg'], rtol=rtol, atol=atol)
    np.testing.assert_allclose(sel.cas_softmax[row, :length], ref['cas_softmax'], rtol=rtol,
                               atol=atol)


# ---------------------------------------------------------------------------------------------
# Elementwise pieces


def test_feature_magnitudes_is_l2_norm_over_channels():
    f = np.random.default_rng(0).normal(size=(3, 5, 7)).astype(np.float32)
    np.testing.assert_allclose(selection.feature_magnitudes(f), np.linalg.norm(f, axis=-1),
                               rtol=1e-6)
    np.testing.assert_allclose(selection.feature_magnitudes(np.array([[[3.0, 4.0]]])), [[5.0]])


def test_uncertainty_eq4():
    mags = np.array([0.0, 12.5, 99.9, 100.0, 100.1, 250.0])
    np.testing.assert_allclose(selection.uncertainty(mags, 100.0),
                               [0.0, 0.125, 0.999, 1.0, 1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(selection.uncertainty(mags, 25.0),
                               np.minimum(25.0, mags) / 25.0, rtol=1e-6)


def test_segment_softmax_over_classes():
    cas = np.random.default_rng(1).normal(size=(2, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(selection.segment_softmax(cas), np_softmax(cas, axis=-1),
                               rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Selection mask [release]


def test_selection_mask_release_rate():
    mask = np.asarray(selection.selection_mask(jax.random.PRNGKey(0), (64, 750), 0.7))
    assert mask.shape == (64, 750) and mask.dtype == np.float32
    kept = mask != 0
    np.testing.assert_allclose(mask[kept], 1 / 0.3, rtol=1e-6)
    assert np.all(mask[~kept] == 0)
    assert kept.mean() == pytest.approx(0.3, abs=0.01)
    # Deterministic in its key, different for another key.
    again = selection.selection_mask(jax.random.PRNGKey(0), (64, 750), 0.7)
    np.testing.assert_array_equal(mask, again)
    other = selection.selection_mask(jax.random.PRNGKey(1), (64, 750), 0.7)
    assert not np.array_equal(mask, other)


def test_selection_mask_rate_zero_is_all_ones():
    mask = selection.selection_mask(jax.random.PRNGKey(0), (3, 11), 0.0)
    np.testing.assert_array_equal(mask, np.ones((3, 11), np.float32))


# ---------------------------------------------------------------------------------------------
# Top-k


# ---------------------------------------------------------------------------------------------
# select() against the NumPy reference


@pytest.mark.parametrize('t', [1, 3, 9, 64])
@pytest.mark.parametrize('ties', [False, True])
def test_select_matches_numpy_one_video(t, ties):
    rng = np.random.default_rng(100 * t + ties)
    cas, mags, feats = random_video(rng, t, ties=ties)
    sel = select(cas[None], mags[None], features=feats[None], r_act=9, r_bkg=4)
    ref = reference_select(cas, mags, feats, r_act=9, r_bkg=4)
    check_video(sel, 0, ref)
    for name in ('p_act', 'p_bkg', 'bkg_softmax', 'mu_act', 'mu_bkg'):
        assert np.all(np.isfinite(getattr(sel, name))), name   # T < r: k = 1, no NaN
    np.testing.assert_allclose(sel.p_act.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(sel.magnitudes, mags[None])


def test_select_hand_example():
    # T = 8, r_act = 4 -> k_act = 2; r_bkg = 2 -> k_bkg = 4.
    mags = np.array([5.0, 1.0, 9.0, 3.0, 9.0, 0.0, 2.0, 7.0], np.float32)
    feats = np.eye(8, dtype=np.float32)     # feat means reveal exactly which segments are used
    cas = np.zeros((8, 2), np.float32)
    cas[:, 0] = [0, 1, 2, 3, 4, 5, 6, 7]
    cas[:, 1] = [7, 6, 5, 4, 3, 2, 1, 0]
    sel = select(cas[None], mags[None], features=feats[None], r_act=4, r_bkg=2)
    # Actions: the two 9s (segments 2 and 4). Background: max - mag = 4,8,0,6,0,9,7,2 -> 5,1,6,3.
    np.testing.assert_allclose(sel.feat_act[0], np.eye(8)[[2, 4]].mean(0))
    np.testing.assert_allclose(sel.feat_bkg[0], np.eye(8)[[5, 1, 6, 3]].mean(0))
    np.testing.assert_allclose(sel.mu_act, [9.0])
    np.testing.assert_allclose(sel.mu_bkg, [(0 + 1 + 2 + 3) / 4])
    # Per class top-2 of A (not A at the action segments): (7+6)/2 for both classes.
    np.testing.assert_allclose(sel.p_act[0], [0.5, 0.5], rtol=1e-6)
    bkg = cas[[5, 1, 6, 3]].mean(0)  # (3.5, 3.5)
    np.testing.assert_allclose(sel.p_bkg[0], np_softmax(bkg), rtol=1e-6)


@pytest.mark.parametrize('t', [2, 101])
@pytest.mark.parametrize('ties', [False, True])
def test_select_with_release_mask_matches_numpy(t, ties):
    rng = np.random.default_rng(7 * t + ties)
    cas, mags, feats = random_video(rng, t, ties=ties)
    mask = np.asarray(selection.selection_mask(jax.random.PRNGKey(t), (1, t), 0.7))[0]
    sel = select(cas[None], mags[None], features=feats[None], mask=mask[None],
                           r_act=9, r_bkg=4)
    ref = reference_select(cas, mags, feats, mask, r_act=9, r_bkg=4)
    check_video(sel, 0, ref)


def test_background_ranking_uses_the_same_mask_and_the_unmasked_maximum():
    mags = np.array([10.0, 9.0, 1.0, 2.0, 3.0, 8.0, 0.5, 4.0], np.float32)
    mask = np.array([1, 1, 0, 1, 1, 1, 0, 1], np.float32) / 0.3
    feats = np.eye(8, dtype=np.float32)
    cas = np.zeros((8, 3), np.float32)
    sel = select(cas[None], mags[None], features=feats[None], mask=mask[None],
                           r_act=8, r_bkg=4)
    # Action top-1 of mags * mask: segment 0. Background top-2 of (10 - mags) * mask: the two
    # smallest *kept* magnitudes, 3 and 4 (segments 3 and 4); 2 and 6 are masked out although
    # their magnitudes are the smallest.
    np.testing.assert_allclose(sel.feat_act[0], np.eye(8)[0])
    np.testing.assert_allclose(sel.feat_bkg[0], np.eye(8)[[3, 4]].mean(0))
    np.testing.assert_allclose(sel.mu_bkg, [2.5])
    # A mask that drops the largest magnitude changes the action pick but not the maximum used
    # for the background ranking (max over the unmasked magnitudes, as the release).
    mask2 = np.array([0, 1, 1, 1, 1, 1, 1, 1], np.float32) / 0.3
    sel2 = select(cas[None], mags[None], features=feats[None], mask=mask2[None],
                            r_act=8, r_bkg=4)
    np.testing.assert_allclose(sel2.feat_act[0], np.eye(8)[1])
    ref = reference_select(cas, mags, feats, mask2, r_act=8, r_bkg=4)
    np.testing.assert_allclose(sel2.feat_bkg[0], ref['feat_bkg'], atol=1e-7)


def test_select_without_features_has_no_feature_means():
    rng = np.random.default_rng(3)
    cas, mags, _ = random_video(rng, 12)
    sel = select(cas[None], mags[None], r_act=9, r_bkg=4)
    assert sel.feat_act is None and sel.feat_bkg is None
    ref = reference_select(cas, mags, r_act=9, r_bkg=4)
    np.testing.assert_allclose(sel.p_act[0], ref['p_act'], rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Padded batches


@pytest.mark.parametrize('with_mask', [False, True])
def test_padded_batch_equals_one_video_at_a_time(with_mask):
    rng = np.random.default_rng(11)
    lengths = [1, 3, 8, 9, 17, 30, 31, 40]
    t_pad = 40
    b = len(lengths)
    cas = rng.normal(size=(b, t_pad, 4)).astype(np.float32)
    mags = rng.integers(0, 5, (b, t_pad)).astype(np.float32)   # ties too
    feats = rng.normal(size=(b, t_pad, 6)).astype(np.float32)
    mask = np.asarray(selection.selection_mask(jax.random.PRNGKey(2), (b, t_pad), 0.7))
    # Padding that would dominate every top-k, maximum and mean if it leaked in.
    for i, n in enumerate(lengths):
        cas[i, n:] = 1e4
        mags[i, n:] = 1e4
        feats[i, n:] = 1e4
    sel = select(cas, mags, features=feats, mask=mask if with_mask else None,
                 lengths=jnp.array(lengths), r_act=9, r_bkg=4)
    for i, n in enumerate(lengths):
        m = mask[i, :n] if with_mask else None
        ref = reference_select(cas[i, :n], mags[i, :n], feats[i, :n], m, r_act=9, r_bkg=4)
        check_video(sel, i, ref, length=n)
        if n not in (1, 9, 31):  # the unpadded call too, for a few lengths (one compile each)
            continue
        alone = select(cas[i:i + 1, :n], mags[i:i + 1, :n], features=feats[i:i + 1, :n],
                       mask=None if m is None else m[None], r_act=9, r_bkg=4)
        for name in ('p_act', 'p_bkg', 'feat_act', 'feat_bkg', 'mu_act', 'mu_bkg'):
            np.testing.assert_allclose(getattr(sel, name)[i], getattr(alone, name)[0],
                                       rtol=1e-5, atol=1e-6, err_msg=f'{name} video {i}')


def test_padded_batch_under_jit_has_finite_gradients():
    rng = np.random.default_rng(12)
    lengths = jnp.array([2, 5, 20])
    cas = rng.normal(size=(3, 20, 4)).astype(np.float32)
    mags = rng.uniform(0, 5, (3, 20)).astype(np.float32)
    feats = rng.normal(size=(3, 20, 6)).astype(np.float32)

    @jax.jit
    def objective(cas, feats):
        sel = selection.select(cas, mags, features=feats, lengths=lengths, r_act=9, r_bkg=4)
        return (jnp.sum(jnp.log(sel.p_act)) + jnp.sum(jnp.log(sel.p_bkg))
                + jnp.sum(sel.feat_act ** 2) + jnp.sum(sel.feat_bkg ** 2))

    g_cas, g_feats = jax.grad(objective, argnums=(0, 1))(cas, feats)
    assert np.all(np.isfinite(g_cas)) and np.all(np.isfinite(g_feats))
    # Nothing flows to padded positions.
    for i, n in enumerate(np.asarray(lengths)):
        assert np.all(np.asarray(g_cas)[i, n:] == 0)
        assert np.all(np.asarray(g_feats)[i, n:] == 0)
