"""The selection split (wtal_jax.data.holdout): which training videos are held out to choose
the checkpoint, by hand and against a plain-Python restatement of its rule."""

import hashlib

import numpy as np
import pytest

from wtal_jax.data import dataset, holdout


def labels_of(rows, num_classes):
    out = np.zeros((len(rows), num_classes), np.float32)
    for v, classes in enumerate(rows):
        out[v, list(classes)] = 1
    return out


def reference_holdout(names, rows, num_classes, fraction):
    """The rule in plain Python: each video under its rarest class (ties: lower index; none:
    a group of its own), round-half-up(fraction * n) of a group's n videos held out, at most
    n - 1, the first ones in the order of the SHA-256 hex digest of their ids."""
    counts = [sum(c in r for r in rows) for c in range(num_classes)]
    groups = {}
    for v, r in enumerate(rows):
        key = min(r, key=lambda c: (counts[c], c)) if r else -1
        groups.setdefault(key, []).append(v)
    held = set()
    for members in groups.values():
        take = min(int(fraction * len(members) + 0.5), len(members) - 1)
        ordered = sorted(members, key=lambda v: hashlib.sha256(names[v].encode()).hexdigest())
        held.update(ordered[:take])
    return [v in held for v in range(len(names))]


def test_by_hand_every_class_keeps_a_training_video():
    # Class 0 has 4 videos, class 1 two, class 2 one: a fraction of 0.5 holds out 2 of class
    # 0's, 1 of class 1's (round(1.0) = 1, and 2 - 1 = 1 is allowed) and none of class 2's.
    names = ['a', 'b', 'c', 'd', 'e', 'f', 'g']
    rows = [{0}, {0}, {0}, {0}, {1}, {1}, {2}]
    held = holdout.stratified_holdout(names, labels_of(rows, 3), 0.5)
    assert held[:4].sum() == 2 and held[4:6].sum() == 1 and not held[6]
    assert held.tolist() == reference_holdout(names, rows, 3, 0.5)


def test_a_video_is_filed_under_its_rarest_class():
    # 'x' has classes 0 (5 videos) and 1 (2 videos): it belongs to class 1's group of two, of
    # which a fraction of 0.5 holds out exactly one.
    names = ['x', 'y', 'p', 'q', 'r', 's']
    rows = [{0, 1}, {1}, {0}, {0}, {0}, {0}]
    held = holdout.stratified_holdout(names, labels_of(rows, 2), 0.5)
    assert held[:2].sum() == 1 and held[2:].sum() == 2
    assert held.tolist() == reference_holdout(names, rows, 2, 0.5)


@pytest.mark.parametrize('fraction', [0.0, 0.1, 0.2, 0.5, 0.9])
def test_random_splits_follow_the_rule_and_the_fraction(fraction):
    rng = np.random.default_rng(int(fraction * 100))
    names = [f'video_{i:04d}' for i in range(200)]
    rows = [set(rng.choice(5, size=rng.integers(0, 3), replace=False).tolist())
            for _ in names]
    held = holdout.stratified_holdout(names, labels_of(rows, 5), fraction)
    assert held.tolist() == reference_holdout(names, rows, 5, fraction)
    assert abs(held.mean() - fraction) <= 0.05 or fraction == 0.9   # 0.9: capped at n - 1


def test_the_split_depends_on_the_ids_not_the_order():
    names = [f'v{i}' for i in range(40)]
    rows = [{i % 3} for i in range(40)]
    labels = labels_of(rows, 3)
    held = holdout.stratified_holdout(names, labels, 0.25)
    order = np.random.default_rng(0).permutation(40)
    shuffled = holdout.stratified_holdout([names[i] for i in order], labels[order], 0.25)
    assert set(np.asarray(names)[held]) == set(np.asarray(names)[order][shuffled])


def _split(names, rows, num_classes):
    return dataset.Split(
        names=tuple(names), features=[np.full((3 + i, 2), i, np.float32) for i in range(len(names))],
        labels=labels_of(rows, num_classes), durations=np.arange(len(names), dtype=np.float64),
        num_segments=np.array([3 + i for i in range(len(names))]),
        class_names=tuple(f'c{c}' for c in range(num_classes)), num_clipped=0,
        gt=tuple(dataset.GroundTruth(np.zeros((0, 2)), np.zeros(0, np.int64)) for _ in names),
        missing=('gone',))


def test_holdout_splits_every_field_alike_in_split_order():
    names = [f'v{i}' for i in range(10)]
    split = _split(names, [{i % 2} for i in range(10)], 2)
    train, selection = holdout.holdout(split, 0.4)
    held = holdout.stratified_holdout(split.names, split.labels, 0.4)
    assert selection.names == tuple(np.asarray(names)[held])
    assert train.names == tuple(np.asarray(names)[~held])
    for part in (train, selection):
        index = [names.index(n) for n in part.names]
        assert index == sorted(index)                      # split order kept
        assert [int(f[0, 0]) for f in part.features] == index
        np.testing.assert_array_equal(part.labels, split.labels[index])
        np.testing.assert_array_equal(part.durations, split.durations[index])
        np.testing.assert_array_equal(part.num_segments, split.num_segments[index])
    # Videos without features stay with the training part, which names them in the log.
    assert train.missing == ('gone',) and selection.missing == ()
