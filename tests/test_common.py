"""Pieces every method shares (wtal_jax.method.common): PyTorch's default initialisation, BCE
with PyTorch's clamped logs, label normalisation, and the top-k mean's weights."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wtal_jax.method import common

from test_um_losses import np_bce
from test_um_selection import np_topk_indices


def test_normalize_labels():
    labels = np.array([[1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0]], np.float32)
    np.testing.assert_allclose(common.normalize_labels(labels),
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
    got = common.binary_cross_entropy(jnp.float32(p), jnp.float32(y))
    assert np.isfinite(got)
    assert float(got) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_clamped_logs_have_finite_gradients_at_zero_and_one():
    """Values clamped as torch's; the gradient there is 0, not NaN (0 * inf), so one saturated
    probability cannot poison a whole step."""
    import jax
    for p in (0.0, 1.0, 1e-40, 1.0 - 1e-9):
        for y in (0.0, 1.0, 0.25):
            g = jax.grad(lambda q: common.binary_cross_entropy(q, jnp.float32(y)))(jnp.float32(p))
            assert np.isfinite(g), (p, y)
    # Away from the clamp the gradient is the analytic one: (p - y) / (p (1 - p)).
    g = jax.grad(lambda q: common.binary_cross_entropy(q, 0.25))(jnp.float32(0.2))
    assert float(g) == pytest.approx((0.2 - 0.25) / (0.2 * 0.8), rel=1e-5)


def test_binary_cross_entropy_against_numpy():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, (6, 5)).astype(np.float32)
    p[0, :2] = [0.0, 1.0]
    y = rng.uniform(0, 1, (6, 5)).astype(np.float32)
    np.testing.assert_allclose(common.binary_cross_entropy(p, y), np_bce(p, y), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize('t,r,k', [(750, 9, 83), (750, 4, 187), (9, 9, 1), (8, 9, 1),
                                   (1, 4, 1), (3, 4, 1), (17, 4, 4), (0, 4, 1)])
def test_num_selected(t, r, k):
    assert common.num_selected(t, r) == k
    assert isinstance(common.num_selected(t, r), int)
    got = common.num_selected(jnp.array([t, t]), r)
    np.testing.assert_array_equal(got, [k, k])


def test_topk_weights_ties_take_lower_index_and_weights_average_the_first_k():
    values = jnp.array([[1.0, 3.0, 3.0, 2.0, 3.0, -jnp.inf]])
    idx, w = common.topk_weights(values, 4, jnp.array([2]))
    np.testing.assert_array_equal(idx, [[1, 2, 4, 3]])
    np.testing.assert_array_equal(idx[0], np_topk_indices([1, 3, 3, 2, 3, -np.inf], 4))
    np.testing.assert_allclose(w, [[0.5, 0.5, 0.0, 0.0]])
    x = jnp.arange(6.0)[None, :, None] * 10
    np.testing.assert_allclose(common.weighted_gather(x, idx, w), [[15.0]])


def test_torch_uniform_init_is_uniform_in_bound():
    values = np.asarray(common.torch_uniform_init(12)(jax.random.PRNGKey(3), (20000,)))
    bound = 1 / math.sqrt(12)
    assert values.dtype == np.float32
    assert values.min() >= -bound and values.max() <= bound
    hist, _ = np.histogram(values, bins=10, range=(-bound, bound))
    assert hist.min() > 0.85 * len(values) / 10  # flat, not bell-shaped
