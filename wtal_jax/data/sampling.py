"""Temporal sampling of a video's n segments to T (SPEC §1), pure NumPy.

Both functions reproduce the authors' releases (``random_perturb`` and ``uniform_sampling`` of
their data loaders) index for index; ``train_indices`` draws all jitters with one vectorised
call. At test time UM keeps a short video whole; BaS-Net's release always takes T indices.
"""

import numpy as np


def _strided_starts(n: int, T: int) -> np.ndarray:
    """floor(i * n / T) for i = 0..T-1, (T,) int64.

    Computed as ``np.arange(T) * n / T`` in float64, the release's exact expression, so the floors
    agree with it even where i * n / T is a rounding error away from an integer.
    """
    return np.floor(np.arange(T) * n / T).astype(np.int64)


def _check(n: int, T: int) -> None:
    if n < 1 or T < 1:
        raise ValueError(f'need at least one segment, got n={n} and T={T}')


def train_indices(n: int, T: int, rng: np.random.Generator) -> np.ndarray:
    """Training indices: exactly T, strided over the n segments with random jitter [release].

    Index i is uniform over [floor(s_i), floor(s_{i+1})] (both ends inclusive) with
    s_i = i * n / T, and the last one uniform over [floor(s_{T-1}), n - 1]; where the interval is a
    single value that value is taken. n < T therefore repeats segments, n == T gives 0..T-1.

    Returns:
      (T,) int64, non-decreasing, each in [0, n).
    """
    _check(n, T)
    if n == T:
        return np.arange(T, dtype=np.int64)
    low = _strided_starts(n, T)
    high = np.append(low[1:], n - 1)  # floor(s_{T-1}) <= n - 1 always, so high >= low
    # One call draws every index; a one-value interval [k, k] returns k, as the release does.
    return rng.integers(low, high, endpoint=True).astype(np.int64)


def test_indices(n: int, T: int, *, fixed: bool = False) -> np.ndarray:
    """Test indices: all n segments when n <= T, else floor(i * n / T) for i = 0..T-1.

    ``fixed`` (``data.test_sampling='fixed'``, BaS-Net's release): always the T indices
    floor(i * n / T), repeating segments of a video shorter than T.

    Returns:
      (min(n, T),) int64, or (T,) with ``fixed``.
    """
    _check(n, T)
    if n == T or (n < T and not fixed):
        return np.arange(n, dtype=np.int64)
    return _strided_starts(n, T)


def test_length(n: int, T: int, *, fixed: bool = False) -> int:
    """T', the number of test indices of a video of n segments (see :func:`test_indices`)."""
    return T if fixed else min(n, T)
