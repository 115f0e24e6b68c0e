"""Temporal sampling against a literal port of the authors' release (SPEC §1)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

# The module, not its functions: pytest would collect a bare ``test_indices`` as a test.
from wtal_jax.data import sampling


def release_random_perturb(length, num_segments, choice):
    """The release's ``random_perturb``, loop for loop; ``choice`` replaces np.random.choice."""
    if num_segments == length:
        return np.arange(num_segments).astype(int)
    samples = np.arange(num_segments) * length / num_segments
    for i in range(num_segments):
        if i < num_segments - 1:
            if int(samples[i]) != int(samples[i + 1]):
                samples[i] = choice(range(int(samples[i]), int(samples[i + 1]) + 1))
            else:
                samples[i] = int(samples[i])
        else:
            if int(samples[i]) < length - 1:
                samples[i] = choice(range(int(samples[i]), length))
            else:
                samples[i] = int(samples[i])
    return samples.astype(int)


def release_uniform_sampling(length, num_segments):
    """The release's ``uniform_sampling``."""
    if length <= num_segments:
        return np.arange(length).astype(int)
    samples = np.arange(num_segments) * length / num_segments
    samples = np.floor(samples)
    return samples.astype(int)


def allowed_intervals(n, T):
    """(low, high) inclusive per index, from the release with choice = min and choice = max."""
    return (release_random_perturb(n, T, min), release_random_perturb(n, T, max))


CASES = [(1, 1), (1, 7), (2, 750), (13, 750), (749, 750), (750, 750), (751, 750), (2614, 750),
         (100, 3), (5, 4), (3, 5), (1000, 999), (37, 37)]


@pytest.mark.parametrize('n,T', CASES)
def test_train_indices_lie_in_the_release_intervals(n, T):
    low, high = allowed_intervals(n, T)
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = sampling.train_indices(n, T, rng)
        assert idx.shape == (T,) and idx.dtype == np.int64
        assert np.all(low <= idx) and np.all(idx <= high)


@given(n=st.integers(1, 3000), T=st.integers(1, 800), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_train_indices_within_intervals_property(n, T, seed):
    low, high = allowed_intervals(n, T)
    idx = sampling.train_indices(n, T, np.random.default_rng(seed))
    assert idx.shape == (T,)
    assert np.all(low <= idx) and np.all(idx <= high)
    assert np.all((0 <= idx) & (idx < n))
    assert np.all(np.diff(idx) >= 0)


@pytest.mark.parametrize('n,T', [(10, 4), (5, 4), (3, 7), (23, 6)])
def test_train_indices_reach_every_allowed_value_uniformly(n, T):
    low, high = allowed_intervals(n, T)
    rng = np.random.default_rng(1)
    draws = np.stack([sampling.train_indices(n, T, rng) for _ in range(4000)])
    for i in range(T):
        values, counts = np.unique(draws[:, i], return_counts=True)
        np.testing.assert_array_equal(values, np.arange(low[i], high[i] + 1))
        # Uniform: each of k values about 4000 / k times (loose, ~6 standard deviations).
        expected = len(draws) / len(values)
        assert np.all(np.abs(counts - expected) < 6 * np.sqrt(expected) + 1)


def test_train_indices_special_lengths():
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(sampling.train_indices(750, 750, rng), np.arange(750))
    np.testing.assert_array_equal(sampling.train_indices(1, 750, rng), np.zeros(750))
    short = sampling.train_indices(13, 750, rng)
    assert set(short.tolist()) <= set(range(13))
    # Every segment repeats about 750 / 13 ≈ 57.7 times; jitter moves only the step positions.
    assert np.bincount(short, minlength=13).min() >= 55
    assert short[-1] == 12


def test_train_indices_deterministic_for_a_seed():
    a = sampling.train_indices(2000, 750, np.random.default_rng(42))
    b = sampling.train_indices(2000, 750, np.random.default_rng(42))
    c = sampling.train_indices(2000, 750, np.random.default_rng(43))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_train_indices_rejects_empty():
    with pytest.raises(ValueError):
        sampling.train_indices(0, 10, np.random.default_rng(0))


@pytest.mark.parametrize('n,T', CASES + [(1, 750), (750, 1)])
def test_test_indices_equal_the_release(n, T):
    idx = sampling.test_indices(n, T)
    assert idx.dtype == np.int64 and idx.shape == (min(n, T),)
    np.testing.assert_array_equal(idx, release_uniform_sampling(n, T))


@given(n=st.integers(1, 5000), T=st.integers(1, 800))
@settings(max_examples=100, deadline=None)
def test_test_indices_property(n, T):
    np.testing.assert_array_equal(sampling.test_indices(n, T), release_uniform_sampling(n, T))
