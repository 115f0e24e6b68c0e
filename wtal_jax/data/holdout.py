"""The selection split: a deterministic, class-stratified part of the training videos held out
from training, on which the best checkpoint is chosen (model selection without the test set).

NumPy only. The held-out videos depend on the video ids and labels alone (not on the seed, the
file order or the machine), so every seed of a run and every rerun holds out the same videos.
"""

import dataclasses
import hashlib

import numpy as np

from wtal_jax.data.dataset import Split


def _name_order(name: str) -> str:
    """A fixed pseudo-random rank of a video id (a digest, not Python's salted hash)."""
    return hashlib.sha256(name.encode('utf-8')).hexdigest()


def stratified_holdout(names, labels: np.ndarray, fraction: float) -> np.ndarray:
    """Which videos to hold out: (V,) bool, about ``fraction`` of them, stratified by class.

    Each video is filed under its rarest class (fewest videos in this split; ties: lower class
    index). Of a class's n videos, round(fraction * n) are held out (at most n - 1, so every
    class keeps a training video), taking them in the order of a digest of their ids.

    Args:
      names: V video ids.
      labels: (V, C) multi-hot video labels.
      fraction: in [0, 1).
    """
    labels = np.asarray(labels) > 0
    held = np.zeros(len(names), bool)
    if fraction <= 0 or len(names) == 0:
        return held
    counts = labels.sum(axis=0)
    # Rarest class per video; a video without labels is filed under a class of its own (-1).
    rank = np.where(labels, counts[None, :], np.iinfo(np.int64).max)
    primary = np.where(labels.any(axis=1), np.argmin(rank, axis=1), -1)
    for c in np.unique(primary):
        members = np.flatnonzero(primary == c)
        take = min(int(np.floor(fraction * len(members) + 0.5)), len(members) - 1)
        ordered = sorted(members, key=lambda v: _name_order(names[v]))
        held[ordered[:take]] = True
    return held


def take(split: Split, index: np.ndarray) -> Split:
    """The videos ``index`` (int array, in that order) of ``split``."""
    index = np.asarray(index, np.int64)
    return dataclasses.replace(
        split, names=tuple(split.names[i] for i in index),
        features=[split.features[i] for i in index], labels=split.labels[index],
        durations=split.durations[index], num_segments=split.num_segments[index],
        gt=tuple(split.gt[i] for i in index))


def holdout(split: Split, fraction: float) -> tuple[Split, Split]:
    """(training videos, selection videos) of a training split, in split order."""
    held = stratified_holdout(split.names, split.labels, fraction)
    # Videos without features (data.missing=skip) stay with the training part, for its log.
    selection = dataclasses.replace(take(split, np.flatnonzero(held)), missing=())
    return take(split, np.flatnonzero(~held)), selection
