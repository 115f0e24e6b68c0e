"""The UM losses (SPEC §3) on hand-checkable inputs and against NumPy; gradients vs finite
differences on a tiny model."""

import math
import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

from wtal_jax.method.um import losses


def np_bce(p, y):
    """torch.nn.BCELoss(reduction='none'): each log clamped at -100."""
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    with np.errstate(divide='ignore'):
        log_p = np.maximum(np.log(p), -100.0)
        log_q = np.maximum(np.log(1.0 - p), -100.0)
    return -(y * log_p + (1 - y) * log_q)


def test_normalize_labels():
    labels = np.array([[1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0]], np.float32)
    np.testing.assert_allclose(losses.normalize_labels(labels),
                               [[0.5, 0, 0.5, 0], [0, 0, 0, 1], [0.25] * 4, [0, 0, 0, 0]])


@pytest.mark.parametrize('p,y,expected', [
    (0.0, 1.0, 100.0),             # log 0 clamped at -100
    (0.0, 0.0, 0.0),
    (1.0, 0.0, 100.0),             # log(1 - 1) clamped
    (1.0, 1.0, 0.0),
    (0.5, 0.3, math.log(2.0)),
    (0.2, 1.0, -math.log(0.2)),
    (0.2, 0.0, -math.log(0.8)),
    (0.25, 0.5, -0.5 * math.log(0.25) - 0.5 * math.log(0.75)),
])
def test_binary_cross_entropy_hand_values(p, y, expected):
    got = losses.binary_cross_entropy(jnp.float32(p), jnp.float32(y))
    assert np.isfinite(got)
    assert float(got) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_clamped_logs_have_finite_gradients_at_zero_and_one():
    """Values clamped as torch's; the gradient there is 0, not NaN (0 * inf), so one saturated
    probability cannot poison a whole step."""
    import jax
    for p in (0.0, 1.0, 1e-40, 1.0 - 1e-9):
        for y in (0.0, 1.0, 0.25):
            g = jax.grad(lambda q: losses.binary_cross_entropy(q, jnp.float32(y)))(jnp.float32(p))
            assert np.isfinite(g), (p, y)
    # Away from the clamp the gradient is the analytic one: (p - y) / (p (1 - p)).
    g = jax.grad(lambda q: losses.binary_cross_entropy(q, 0.25))(jnp.float32(0.2))
    assert float(g) == pytest.approx((0.2 - 0.25) / (0.2 * 0.8), rel=1e-5)


@pytest.mark.parametrize('variant', ['release', 'paper'])
def test_losses_through_a_saturated_softmax_have_finite_gradients(variant):
    import jax
    logits = jnp.array([[0.0, 200.0, -200.0], [150.0, -150.0, 0.0]])   # softmax underflows
    labels = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])

    def total(z):
        p = jax.nn.softmax(z, axis=-1)
        return jnp.sum(losses.classification_loss(p_act=p, labels=labels, variant=variant)
                       + losses.background_entropy_loss(p_bkg=p, bkg_softmax=p,
                                                        variant=variant))

    assert np.isfinite(total(logits))
    grads = jax.grad(total)(logits)
    assert np.all(np.isfinite(grads))
    # torch's BCE gradient at a clamped entry is huge but finite, and the softmax multiplies it
    # by p = 0: the logit gradient equals the one computed from the unclamped entries alone.
    p = np.asarray(jax.nn.softmax(logits, axis=-1), np.float64)
    y_hat = np.asarray(labels) / np.asarray(labels).sum(1, keepdims=True)
    c = p.shape[1]
    with np.errstate(divide='ignore', invalid='ignore'):
        if variant == 'release':
            g = ((p - y_hat) / (p * (1 - p)) + (p - 1 / c) / (p * (1 - p))) / c
        else:
            g = -y_hat / p - 1 / (c * p)
    g = np.where((p > 0) & (p < 1), g, 0.0)
    expected = p * (g - np.sum(g * p, axis=1, keepdims=True))   # softmax backward
    np.testing.assert_allclose(grads, expected, rtol=1e-4, atol=1e-6)


def test_binary_cross_entropy_against_numpy():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, (6, 5)).astype(np.float32)
    p[0, :2] = [0.0, 1.0]
    y = rng.uniform(0, 1, (6, 5)).astype(np.float32)
    np.testing.assert_allclose(losses.binary_cross_entropy(p, y), np_bce(p, y), rtol=1e-5,
                               atol=1e-5)


def test_classification_loss_release_is_bce_to_normalised_labels_mean_over_classes():
    rng = np.random.default_rng(1)
    p_act = rng.dirichlet(np.ones(5), size=4).astype(np.float32)
    labels = np.array([[1, 0, 0, 0, 0], [0, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]],
                      np.float32)
    y_hat = labels / labels.sum(1, keepdims=True)
    got = losses.classification_loss(p_act=p_act, labels=labels)
    assert got.shape == (4,)
    np.testing.assert_allclose(got, np_bce(p_act, y_hat).mean(axis=1), rtol=1e-5)
    # torch's BCELoss mean over all B x C entries is the mean of the per-video values.
    assert float(jnp.mean(got)) == pytest.approx(np_bce(p_act, y_hat).mean(), rel=1e-5)


def test_classification_loss_hand_example():
    # One video, classes {0, 2} of 3 -> y_hat = (0.5, 0, 0.5); p = (0.5, 0.25, 0.25).
    p = np.array([[0.5, 0.25, 0.25]], np.float32)
    y = np.array([[1, 0, 1]], np.float32)
    release = -(0.5 * math.log(0.5) + 0.5 * math.log(0.5) + math.log(0.75)
                + 0.5 * math.log(0.25) + 0.5 * math.log(0.75)) / 3
    paper = -(0.5 * math.log(0.5) + 0.5 * math.log(0.25))
    assert float(losses.classification_loss(p_act=p, labels=y)[0]) == pytest.approx(release,
                                                                                     rel=1e-5)
    assert float(losses.classification_loss(p_act=p, labels=y, variant='paper')[0]) == \
        pytest.approx(paper, rel=1e-5)


def test_classification_loss_paper_eq6_against_numpy_and_clamp():
    rng = np.random.default_rng(2)
    p_act = rng.dirichlet(np.ones(4), size=3).astype(np.float32)
    p_act[2] = [0.0, 0.5, 0.5, 0.0]
    labels = np.array([[1, 1, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0]], np.float32)
    y_hat = labels / labels.sum(1, keepdims=True)
    with np.errstate(divide='ignore'):
        expected = -(y_hat * np.maximum(np.log(p_act.astype(np.float64)), -100)).sum(1)
    got = losses.classification_loss(p_act=p_act, labels=labels, variant='paper')
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert float(got[2]) == pytest.approx(100.0)


def test_unknown_variants_are_rejected():
    p = jnp.full((1, 2), 0.5)
    with pytest.raises(ValueError, match='variant'):
        losses.classification_loss(p_act=p, labels=p, variant='torch')
    with pytest.raises(ValueError, match='variant'):
        losses.background_entropy_loss(p_bkg=p, bkg_softmax=p, variant='torch')


def test_uncertainty_loss_margin_active_and_inactive():
    feat_act = np.array([[3.0, 4.0, 0.0],      # |f_act| = 5 < m: margin term 10 - 5 = 5
                         [0.0, 12.0, 16.0],    # |f_act| = 20 > m: margin term 0
                         [6.0, 8.0, 0.0]],     # |f_act| = 10 = m: 0
                        np.float32)
    feat_bkg = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0]], np.float32)
    got = losses.uncertainty_loss(feat_act=feat_act, feat_bkg=feat_bkg, margin=10.0)
    np.testing.assert_allclose(got, [(5 + 1) ** 2, (0 + 2) ** 2, 0.0], rtol=1e-6)


def test_uncertainty_loss_against_numpy():
    rng = np.random.default_rng(3)
    fa = (rng.normal(0, 10, (8, 16)) * np.arange(1, 9)[:, None]).astype(np.float32)
    fb = rng.normal(0, 3, (8, 16)).astype(np.float32)
    na, nb = np.linalg.norm(fa.astype(np.float64), axis=1), np.linalg.norm(fb, axis=1)
    assert (na > 100).any() and (na < 100).any()   # both sides of the margin
    expected = (np.maximum(0, 100.0 - na) + nb) ** 2
    np.testing.assert_allclose(losses.uncertainty_loss(feat_act=fa, feat_bkg=fb, margin=100.0),
                               expected, rtol=1e-5)


def test_uncertainty_loss_gradient_stops_beyond_the_margin():
    import jax
    fb = jnp.array([[0.0, 1.0]])

    def loss(fa):
        return losses.uncertainty_loss(feat_act=fa, feat_bkg=fb, margin=10.0)[0]

    # Beyond the margin only |f_bkg| is left: no gradient to f_act.
    np.testing.assert_array_equal(jax.grad(loss)(jnp.array([[30.0, 40.0]])), [[0.0, 0.0]])
    # Inside: d/df_act (m - |f_act| + |f_bkg|)^2 = -2 (m - |f_act| + |f_bkg|) f_act / |f_act|.
    fa = jnp.array([[3.0, 4.0]])
    np.testing.assert_allclose(jax.grad(loss)(fa), -2 * (10 - 5 + 1) * np.array([[0.6, 0.8]]),
                               rtol=1e-6)


def test_background_entropy_release_is_bce_to_uniform():
    rng = np.random.default_rng(4)
    p_bkg = rng.dirichlet(np.ones(5), size=3).astype(np.float32)
    got = losses.background_entropy_loss(p_bkg=p_bkg, bkg_softmax=p_bkg)
    np.testing.assert_allclose(got, np_bce(p_bkg, np.full_like(p_bkg, 0.2)).mean(1), rtol=1e-5)
    # A uniform p_bkg over C = 4 classes: -(1/4 log 1/4 + 3/4 log 3/4) per class, same mean.
    uniform = losses.background_entropy_loss(p_bkg=jnp.full((1, 4), 0.25),
                                             bkg_softmax=jnp.full((1, 4), 0.25))
    assert float(uniform[0]) == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)),
                                              rel=1e-6)


def test_background_entropy_paper_eq8():
    rng = np.random.default_rng(5)
    soft = rng.dirichlet(np.ones(4), size=3).astype(np.float32)
    got = losses.background_entropy_loss(p_bkg=jnp.zeros_like(soft), bkg_softmax=soft,
                                         variant='paper')
    np.testing.assert_allclose(got, -np.log(soft.astype(np.float64)).mean(1), rtol=1e-5)
    # Uniform over C classes gives log C, its minimum.
    uniform = losses.background_entropy_loss(p_bkg=jnp.zeros((1, 4)),
                                             bkg_softmax=jnp.full((1, 4), 0.25), variant='paper')
    assert float(uniform[0]) == pytest.approx(math.log(4), rel=1e-6)


def test_total_loss_eq5_weights():
    cls, um, be = jnp.array([0.7, 0.1]), jnp.array([2000.0, 0.0]), jnp.array([0.3, 0.6])
    got = losses.total_loss(cls=cls, um=um, be=be, alpha=5e-4, beta=1.0)
    np.testing.assert_allclose(got, [0.7 + 1.0 + 0.3, 0.1 + 0.6], rtol=1e-6)
    got = losses.total_loss(cls=cls, um=um, be=be, alpha=0.0, beta=0.5)
    np.testing.assert_allclose(got, [0.7 + 0.15, 0.1 + 0.3], rtol=1e-6)


def test_per_video_losses_combine_the_three_with_alpha_and_beta():
    """UM's per_video_losses wires selection outputs to the three losses (SPEC §3 defaults)."""
    from wtal_jax import config
    from wtal_jax.method.um import selection
    rng = np.random.default_rng(6)
    cas = rng.normal(size=(2, 12, 3)).astype(np.float32)
    feats = np.abs(rng.normal(0, 20, (2, 12, 5))).astype(np.float32)
    sel = selection.select(cas, selection.feature_magnitudes(feats), features=feats,
                           r_act=3, r_bkg=2)
    labels = np.array([[1, 0, 1], [0, 1, 0]], np.float32)
    hp = config.frozen(config.default_config())
    assert (hp.loss.alpha, hp.loss.beta, hp.loss.margin) == (5e-4, 1.0, 100.0)
    parts = losses.per_video_losses(sel, labels, hp=hp)
    y_hat = labels / labels.sum(1, keepdims=True)
    cls = np_bce(sel.p_act, y_hat).mean(1)
    fa = np.asarray(sel.feat_act, np.float64)
    fb = np.asarray(sel.feat_bkg, np.float64)
    um = (np.maximum(0, 100 - np.linalg.norm(fa, axis=1)) + np.linalg.norm(fb, axis=1)) ** 2
    be = np_bce(sel.p_bkg, np.full((2, 3), 1 / 3)).mean(1)
    np.testing.assert_allclose(parts['loss_cls'], cls, rtol=1e-5)
    np.testing.assert_allclose(parts['loss_um'], um, rtol=1e-5)
    np.testing.assert_allclose(parts['loss_be'], be, rtol=1e-5)
    np.testing.assert_allclose(parts['loss'], cls + 5e-4 * um + be, rtol=1e-5)


_GRAD_CHECK = textwrap.dedent('''
    import jax
    jax.config.update('jax_enable_x64', True)
    import jax.numpy as jnp
    import numpy as np
    from jax.test_util import check_grads
    from wtal_jax import config, training
    from wtal_jax.method.um import METHOD
    from wtal_jax.method.um.losses import per_video_losses
    from wtal_jax.method.um.models import UMModel


    def step_hp(**settings):
        """The default config, frozen, with these model and loss settings."""
        cfg = config.default_config()
        for key, value in settings.items():
            cfg['model' if key in cfg.model else 'loss'][key] = value
        return config.frozen(cfg)


    model = UMModel(num_classes=3, embed_dim=8, dropout_rate=0.5)
    # The evaluation pass is the keyed pass of the same parameters with no dropout at all.
    deterministic = UMModel(num_classes=3, embed_dim=8, dropout_rate=0.0)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(0, 1, (2, 13, 4)))
    labels = jnp.asarray([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    params = jax.jit(model.init, static_argnames='train')(jax.random.PRNGKey(0), x,
                                                          train=False)['params']
    params = jax.tree.map(lambda p: p.astype(jnp.float64) * 3.0, params)
    assert params['embed']['kernel'].dtype == jnp.float64

    def check(variant, key):
        train = key is not None
        module = model if train else deterministic
        keys = jax.random.split(jax.random.PRNGKey(0) if key is None else key,
                                x.shape[0])   # one per video
        settings = dict(r_act=3, r_bkg=2, cls_variant=variant, be_variant=variant,
                        selection_dropout=0.5 if train else 0.0)
        hp = step_hp(**settings)
        sel = jax.jit(lambda p: training.forward(METHOD, module, p, x, hp=hp, keys=keys))(params)
        # A margin above the action feature norms, so L_um keeps both of its terms.
        norms = jnp.linalg.norm(sel.feat_act, axis=-1)
        hp = step_hp(**settings, margin=float(2 * jnp.max(norms)))

        @jax.jit
        def total(p):
            sel = training.forward(METHOD, module, p, x, hp=hp, keys=keys)
            return jnp.mean(per_video_losses(sel, labels, hp=hp)['loss'])

        grads = jax.grad(total)(params)
        assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
        assert all(bool(jnp.any(g != 0)) for g in jax.tree.leaves(grads))
        check_grads(total, (params,), order=1, modes=('rev',), atol=1e-5, rtol=1e-5)

    # The training pass (dropout and selection mask from a fixed key), then the evaluation pass.
    check('release', jax.random.PRNGKey(1))
    check('paper', None)
    print('GRADS OK')
''')


def test_gradients_match_finite_differences_float64():
    """jax.test_util.check_grads on the total loss w.r.t. a tiny UMModel's parameters.

    In a subprocess, so that float64 (jax_enable_x64) does not leak into other tests.
    """
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    proc = subprocess.run([sys.executable, '-c', _GRAD_CHECK], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'GRADS OK' in proc.stdout
