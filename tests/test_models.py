"""The UM network (SPEC §2 items 1-2): PyTorch-default init, shapes, "same" padding, dropout."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wtal_jax.method.um.models import UMModel, torch_uniform_init

B, T, D, E, C = 2, 7, 64, 256, 5
DROPOUT = 0.7  # the release's model.dropout_rate


def init_params(model, *, seed=0, t=T, d=D):
    return model.init(jax.random.PRNGKey(seed), jnp.zeros((1, t, d)), train=False)['params']


def numpy_forward(x, params, *, dropout_scale=None):
    """conv(k=3, stride 1, zero padding 1) + bias, relu, then a bias-free linear map, in NumPy.

    ``x`` (B, T, D); the kernel (3, D, E) is a cross-correlation over time, as torch's Conv1d:
    out[t] = sum_k x[t + k - 1] @ W[k] with x = 0 outside [0, T).
    """
    w = np.asarray(params['embed']['kernel'], np.float64)
    b = np.asarray(params['embed']['bias'], np.float64)
    wc = np.asarray(params['classifier']['kernel'], np.float64)
    x = np.asarray(x, np.float64)
    padded = np.pad(x, ((0, 0), (1, 1), (0, 0)))
    n = x.shape[1]
    out = sum(padded[:, k:k + n] @ w[k] for k in range(3)) + b
    features = np.maximum(out, 0.0)
    hidden = features if dropout_scale is None else features * dropout_scale
    return hidden @ wc, features


def test_parameter_shapes_and_no_classifier_bias():
    params = init_params(UMModel(num_classes=C, embed_dim=E, dropout_rate=DROPOUT))
    assert params['embed']['kernel'].shape == (3, D, E)
    assert params['embed']['bias'].shape == (E,)
    assert set(params['classifier']) == {'kernel'}   # the classifier has no bias (SPEC §2.2)
    assert params['classifier']['kernel'].shape == (E, C)


@pytest.mark.parametrize('path,fan_in', [(('embed', 'kernel'), 3 * D), (('embed', 'bias'), 3 * D),
                                         (('classifier', 'kernel'), E)])
def test_pytorch_default_init_bounds(path, fan_in):
    params = init_params(UMModel(num_classes=C, embed_dim=E, dropout_rate=DROPOUT))
    w = np.asarray(params[path[0]][path[1]], np.float64).ravel()
    bound = 1.0 / math.sqrt(fan_in)
    assert np.all(np.abs(w) <= bound)
    # Uniform over the whole interval: extremes near both ends, spread of a uniform law.
    # (For n samples the gap to either end is about 2 * bound / n.)
    slack = 2 * bound * 8 / w.size
    assert w.max() >= bound - slack and w.min() <= -bound + slack
    assert np.std(w) == pytest.approx(bound / math.sqrt(3), rel=0.1)
    assert abs(np.mean(w)) < 4 * bound / math.sqrt(3 * w.size)


def test_torch_uniform_init_is_uniform_in_bound():
    values = np.asarray(torch_uniform_init(12)(jax.random.PRNGKey(3), (20000,)))
    bound = 1 / math.sqrt(12)
    assert values.dtype == np.float32
    assert values.min() >= -bound and values.max() <= bound
    hist, _ = np.histogram(values, bins=10, range=(-bound, bound))
    assert hist.min() > 0.85 * len(values) / 10  # flat, not bell-shaped


def test_different_seeds_give_different_params():
    model = UMModel(num_classes=C, embed_dim=E, dropout_rate=DROPOUT)
    a, b = init_params(model, seed=0), init_params(model, seed=1)
    assert not np.array_equal(a['embed']['kernel'], b['embed']['kernel'])


def test_forward_shapes_and_numpy_reference_with_zero_same_padding():
    model = UMModel(num_classes=C, embed_dim=E, dropout_rate=DROPOUT)
    params = init_params(model)
    # Positive inputs with a large first and last segment: a border that saw anything but zeros
    # beyond it (replicate/reflect padding, or a shifted kernel) would be far off.
    x = np.random.default_rng(0).uniform(0, 1, (B, T, D)).astype(np.float32)
    x[:, 0] += 3.0
    x[:, -1] += 3.0
    cas, features = model.apply({'params': params}, x, train=False)
    assert cas.shape == (B, T, C) and features.shape == (B, T, E)
    assert cas.dtype == jnp.float32
    ref_cas, ref_features = numpy_forward(x, params)
    np.testing.assert_allclose(features, ref_features, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cas, ref_cas, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(features) >= 0)  # ReLU
    # Each border segment is exactly conv of (0, x0, x1) and (x_{T-2}, x_{T-1}, 0).
    w, b = params['embed']['kernel'], params['embed']['bias']
    first = np.maximum(x[:, 0] @ w[1] + x[:, 1] @ w[2] + b, 0)
    last = np.maximum(x[:, -2] @ w[0] + x[:, -1] @ w[1] + b, 0)
    np.testing.assert_allclose(features[:, 0], first, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(features[:, -1], last, rtol=1e-5, atol=1e-5)


def test_single_segment_video_sees_zeros_on_both_sides():
    model = UMModel(num_classes=C, embed_dim=E, dropout_rate=DROPOUT)
    params = init_params(model)
    x = np.random.default_rng(1).normal(size=(1, 1, D)).astype(np.float32)
    _, features = model.apply({'params': params}, x, train=False)
    ref = np.maximum(x[:, 0] @ params['embed']['kernel'][1] + params['embed']['bias'], 0)
    np.testing.assert_allclose(features[:, 0], ref, rtol=1e-5, atol=1e-5)


def test_videos_of_a_batch_are_independent():
    model = UMModel(num_classes=C, embed_dim=E, dropout_rate=DROPOUT)
    params = init_params(model)
    x = np.random.default_rng(2).normal(size=(B, T, D)).astype(np.float32)
    cas, _ = model.apply({'params': params}, x, train=False)
    cas1, _ = model.apply({'params': params}, x[1:], train=False)
    np.testing.assert_allclose(cas[1:], cas1, rtol=1e-6, atol=1e-6)


def identity_classifier(params):
    """Classifier kernel = identity (E = C), so the class activations are dropout(F) itself."""
    params = jax.tree.map(lambda a: a, params)
    params['classifier']['kernel'] = jnp.eye(params['classifier']['kernel'].shape[0])
    return params


def test_dropout_only_with_train_true():
    e = 32
    model = UMModel(num_classes=e, embed_dim=e, dropout_rate=0.7)
    params = identity_classifier(init_params(model, d=8))
    x = np.random.default_rng(3).uniform(0, 1, (4, 64, 8)).astype(np.float32)
    cas_eval, feats_eval = model.apply({'params': params}, x, train=False)
    cas_eval2, _ = model.apply({'params': params}, x, train=False)
    np.testing.assert_array_equal(cas_eval, cas_eval2)          # no randomness in evaluation
    np.testing.assert_allclose(cas_eval, feats_eval, rtol=1e-6)  # no dropout in evaluation

    rngs = {'dropout': jax.random.PRNGKey(5)}
    cas_train, feats_train = model.apply({'params': params}, x, train=True, rngs=rngs)
    # Dropout acts on the classifier input only: the embeddings (magnitudes) are untouched.
    np.testing.assert_array_equal(feats_train, feats_eval)
    cas_train, feats = np.asarray(cas_train), np.asarray(feats_eval)
    positive = feats > 0
    dropped = positive & (cas_train == 0)
    kept = positive & ~dropped
    np.testing.assert_allclose(cas_train[kept], feats[kept] / 0.3, rtol=1e-5)
    assert dropped.sum() / positive.sum() == pytest.approx(0.7, abs=0.03)
    again, _ = model.apply({'params': params}, x, train=True, rngs=rngs)
    np.testing.assert_array_equal(again, cas_train)              # same key, same mask
    other, _ = model.apply({'params': params}, x, train=True,
                           rngs={'dropout': jax.random.PRNGKey(6)})
    assert not np.array_equal(other, cas_train)


def test_train_true_needs_a_dropout_rng():
    model = UMModel(num_classes=C, embed_dim=E, dropout_rate=DROPOUT)
    params = init_params(model)
    with pytest.raises(Exception, match='(?i)rng|dropout'):
        model.apply({'params': params}, jnp.ones((1, T, D)), train=True)


def test_zero_dropout_rate_trains_like_eval():
    model = UMModel(num_classes=C, embed_dim=E, dropout_rate=0.0)
    params = init_params(model)
    x = np.random.default_rng(4).normal(size=(B, T, D)).astype(np.float32)
    a, _ = model.apply({'params': params}, x, train=False)
    b, _ = model.apply({'params': params}, x, train=True, rngs={'dropout': jax.random.PRNGKey(0)})
    np.testing.assert_array_equal(a, b)
