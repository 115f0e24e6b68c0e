"""The synthetic data set: THUMOS layout, determinism, ensure(), and a learnable signal."""

import filecmp
import json
import os

import numpy as np
import pytest

from wtal_jax.data import annotations as annotations_lib, dataset, synthetic
from wtal_jax.errors import UserError

SMALL = dict(num_classes=3, num_train=12, num_test=6, feature_dim=8, min_segments=20,
             max_segments=60, seed=3)


def load(root, split, class_names, modality='all', feature_dim=16):
    subset = synthetic.TRAIN_SUBSET if split == 'train' else synthetic.TEST_SUBSET
    return dataset.load_split(str(root), annotation_file='gt.json', split_file=f'split_{split}.txt',
                           feature_dir=f'features/{split}', subset=subset, modality=modality,
                           class_names=class_names, feature_dim=feature_dim,
                           require_labels=split == 'train')


@pytest.fixture(scope='module')
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp('synthetic') / 'small'
    params = synthetic.generate(str(root), **SMALL)
    return str(root), params


def test_layout_and_formats(small):
    root, params = small
    names = tuple(params['class_names'])
    assert names == ('Class00', 'Class01', 'Class02')
    assert sorted(os.listdir(root)) == sorted(['.complete', 'gt.json', 'split_train.txt',
                                               'split_test.txt', 'features'])
    for split in ('train', 'test'):
        assert sorted(os.listdir(os.path.join(root, 'features', split))) == ['flow', 'rgb']
    with open(os.path.join(root, 'gt.json')) as f:
        raw = json.load(f)
    first = next(iter(raw['database'].values()))
    # Bounds are strings in seconds, like the real THUMOS'14 file.
    assert all(isinstance(b, str) for item in first['annotations'] for b in item['segment'])

    annotations = annotations_lib.load_annotations(os.path.join(root, 'gt.json'))
    assert len(annotations) == 18
    assert annotations_lib.class_names_from(annotations, [synthetic.TRAIN_SUBSET], ()) == names

    train, test = load(root, 'train', names), load(root, 'test', names)
    assert len(train) == 12 and len(test) == 6
    assert train.names[0] == 'video_validation_0000001' and test.names[0] == 'video_test_0000001'
    assert train.feature_dim == 16
    assert np.all((train.num_segments >= 20) & (train.num_segments <= 60))
    rgb = load(root, 'train', names, modality='rgb', feature_dim=8)
    np.testing.assert_array_equal(rgb.features[0], train.features[0][:, :8])
    for f in (os.path.join(root, 'features', 'train', 'flow', 'video_validation_0000001.npy'),):
        assert np.load(f).dtype == np.float32


def test_features_non_negative_and_labels_match_annotations(small):
    root, params = small
    names = tuple(params['class_names'])
    annotations = annotations_lib.load_annotations(os.path.join(root, 'gt.json'))
    for split in ('train', 'test'):
        loaded = load(root, split, names)
        for v, video in enumerate(loaded.names):
            assert loaded.features[v].min() >= 0
            present = {names.index(label) for label in annotations[video].labels}
            assert present  # every video has at least one action
            assert set(np.flatnonzero(loaded.labels[v]).tolist()) == present
            segments = annotations[video].segments
            assert np.all(segments[:, 1] > segments[:, 0])
            assert np.all(np.diff(segments[:, 0]) > 0)  # sorted, non-overlapping instances


def test_deterministic_for_a_seed(small, tmp_path):
    root, _ = small
    again = str(tmp_path / 'again')
    synthetic.generate(again, **SMALL)
    files = ['gt.json', 'split_train.txt', 'split_test.txt'] + [
        os.path.join('features', split, stream, name)
        for split in ('train', 'test') for stream in ('rgb', 'flow')
        for name in os.listdir(os.path.join(root, 'features', split, stream))]
    match, mismatch, errors = filecmp.cmpfiles(root, again, files, shallow=False)
    assert not mismatch and not errors and len(match) == len(files)

    other = str(tmp_path / 'other')
    synthetic.generate(other, **{**SMALL, 'seed': 4})
    assert not filecmp.cmp(os.path.join(root, 'gt.json'), os.path.join(other, 'gt.json'),
                           shallow=False)


def test_ensure_is_idempotent_and_refuses_a_different_set(tmp_path):
    root = str(tmp_path / 'set')
    params = dict(SMALL, num_train=4, num_test=2)
    synthetic.ensure(root, **params)
    marker = os.path.join(root, synthetic.COMPLETE_MARKER)
    stamp = os.stat(marker).st_mtime_ns
    feature = os.path.join(root, 'features', 'train', 'rgb', 'video_validation_0000001.npy')
    before = os.stat(feature).st_mtime_ns
    assert synthetic.ensure(root, **params)['num_train'] == 4
    assert os.stat(marker).st_mtime_ns == stamp and os.stat(feature).st_mtime_ns == before
    with pytest.raises(UserError, match='num_train=4 there, 5 asked') as info:
        synthetic.ensure(root, **{**params, 'num_train': 5})
    assert '\n' not in str(info.value)
    with pytest.raises(UserError, match='class_names'):
        synthetic.ensure(root, **{**params, 'class_names': ['a', 'b', 'c']})


def test_interrupted_run_is_detected_and_redone(tmp_path, monkeypatch):
    root = str(tmp_path / 'set')
    params = dict(SMALL, num_train=3, num_test=2)
    make_video, calls = synthetic._video, []

    def crash_on_fourth_video(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return make_video(*args, **kwargs)

    monkeypatch.setattr(synthetic, '_video', crash_on_fourth_video)
    with pytest.raises(KeyboardInterrupt):
        synthetic.ensure(root, **params)
    assert not os.path.exists(os.path.join(root, synthetic.COMPLETE_MARKER))
    assert os.path.exists(os.path.join(root, synthetic.IN_PROGRESS_MARKER))
    monkeypatch.setattr(synthetic, '_video', make_video)
    synthetic.ensure(root, **params)  # the half-written set is ours: redone, not refused
    assert os.path.exists(os.path.join(root, synthetic.COMPLETE_MARKER))
    assert not os.path.exists(os.path.join(root, synthetic.IN_PROGRESS_MARKER))
    names = tuple(synthetic.ensure(root, **params)['class_names'])
    assert len(load(root, 'train', names)) == 3 and len(load(root, 'test', names)) == 2


def test_refuses_to_overwrite_other_data(tmp_path):
    (tmp_path / 'mine.txt').write_text('precious')
    with pytest.raises(UserError, match='not empty'):
        synthetic.ensure(str(tmp_path), **SMALL)
    assert (tmp_path / 'mine.txt').read_text() == 'precious'


def test_parameter_checks(tmp_path):
    with pytest.raises(UserError, match='unknown'):
        synthetic.ensure(str(tmp_path / 'x'), num_videos=3)
    with pytest.raises(UserError, match='min_segments'):
        synthetic.generate(str(tmp_path / 'x'), min_segments=50, max_segments=10)
    with pytest.raises(UserError, match='2 class names for num_classes 3'):
        synthetic.generate(str(tmp_path / 'x'), num_classes=3, class_names=['Jump', 'Run'])
    with pytest.raises(UserError, match='distinct'):
        synthetic.generate(str(tmp_path / 'x'), class_names=['Jump', 'Jump'])
    # Names alone decide the number of classes.
    small = {k: v for k, v in SMALL.items() if k != 'num_classes'}
    params = synthetic.generate(str(tmp_path / 'named'), **{
        **small, 'num_train': 2, 'num_test': 1, 'class_names': ['Jump', 'Run']})
    assert params['num_classes'] == 2
    annotations = annotations_lib.load_annotations(str(tmp_path / 'named' / 'gt.json'))
    assert {label for a in annotations.values() for label in a.labels} <= {'Jump', 'Run'}


def test_default_set_is_small_and_realistic(tmp_path):
    """The default set: its size, how much is action, how many classes, and a signal to learn
    from. (Its size, not a wall-clock time, keeps it quick: about 1 s to write on the 2-core
    CPU; speed claims live in the benchmarks.)"""
    params = synthetic.generate(str(tmp_path / 'default'))
    files = [os.path.join(folder, name) for folder, _, names in os.walk(tmp_path / 'default')
             for name in names]
    # 300 videos of 40-200 segments, two float32 streams of 64: about 19 MB.
    assert sum(os.path.getsize(f) for f in files) < 24e6
    names = tuple(params['class_names'])
    train = load(tmp_path / 'default', 'train', names, feature_dim=128)
    test = load(tmp_path / 'default', 'test', names, feature_dim=128)
    action = [segment_labels(s) for s in (train, test)]
    fraction = np.mean(np.concatenate(action[1]) >= 0)
    assert 0.2 < fraction < 0.45
    two = np.mean(train.labels.sum(1) == 2)
    assert 0.1 < two < 0.3 and train.labels.sum(1).max() == 2
    lengths = np.concatenate([g.segments[:, 1] - g.segments[:, 0] for g in train.gt]) / 0.64
    assert lengths.min() < 3 and lengths.max() > 30

    features = np.concatenate(test.features)
    labels = np.concatenate(action[1])
    # Action segments are larger (the paper's premise), but magnitude alone is far from perfect.
    magnitude_ap = average_precision(np.linalg.norm(features, axis=1), labels >= 0)
    assert (labels >= 0).mean() + 0.15 < magnitude_ap < 0.9
    # A weakly-supervised oracle, direction = mean of videos with class c minus without, picks
    # out the class's segments within its videos well above chance, but not perfectly.
    means = np.stack([f.mean(0) for f in train.features])
    video = np.concatenate([np.full(n, v) for v, n in enumerate(test.num_segments)])
    gains = []
    for c in range(len(names)):
        w = means[train.labels[:, c] > 0].mean(0) - means[train.labels[:, c] == 0].mean(0)
        inside = test.labels[video, c] > 0
        positives = labels[inside] == c
        gains.append(average_precision(features[inside] @ w, positives) - positives.mean())
    assert 0.1 < np.mean(gains) < 0.5


def segment_labels(split):
    """Per video (n,) class of each segment from the clipped ground truth, -1 for background."""
    out = []
    for gt, n in zip(split.gt, split.num_segments):
        labels = np.full(n, -1)
        middle = (np.arange(n) + 0.5) * dataset.SEGMENT_SECONDS
        for (start, end), c in zip(gt.segments, gt.classes):
            labels[(middle >= start) & (middle < end)] = c
        out.append(labels)
    return out


def average_precision(scores, positives):
    """Non-interpolated AP of ranking ``scores`` for binary ``positives``."""
    order = np.argsort(-scores, kind='stable')
    hits = positives[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())
