"""Annotations, class lists and feature loading; every bad input is a one-line UserError."""

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

from wtal_jax import config, io_utils
from wtal_jax.data import annotations as annotations_lib, dataset
from wtal_jax.errors import UserError

CLASSES = ('Jump', 'Run', 'Swim')


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(obj, f)


def make_dataset(root, videos, *, subset='train', split='train', dim=3, lengths=None,
                 modalities=('rgb', 'flow')):
    """A tiny data set in the SPEC §1 layout; returns the keyword arguments for load_split.

    videos: {name: [(start, end, label), ...]}; features of video v, stream s are v-dependent
    constants so concatenation order can be checked.
    """
    root = str(root)
    database = {name: {'subset': subset,
                       'annotations': [{'segment': [str(a), str(b)], 'label': label}
                                       for a, b, label in items]}
                for name, items in videos.items()}
    write_json(os.path.join(root, 'gt.json'), {'database': database})
    with open(os.path.join(root, f'split_{split}.txt'), 'w') as f:
        f.write('\n'.join(videos) + '\n')
    for v, name in enumerate(videos):
        n = (lengths or {}).get(name, 10)
        for s, stream in enumerate(modalities):
            folder = os.path.join(root, 'features', split, stream)
            os.makedirs(folder, exist_ok=True)
            np.save(os.path.join(folder, name + '.npy'),
                    np.full((n, dim), 10 * v + s, np.float32))
    return dict(annotation_file='gt.json', split_file=f'split_{split}.txt',
                feature_dir=f'features/{split}', subset=subset, modality='all',
                class_names=CLASSES, feature_dim=2 * dim)


def feature_path(root, name, stream='rgb', split='train'):
    return os.path.join(str(root), 'features', split, stream, name + '.npy')


def assert_one_line_error(call, *fragments):
    """Runs ``call``, expects a UserError whose single-line message contains every fragment."""
    with pytest.raises(UserError) as info:
        call()
    message = str(info.value)
    assert '\n' not in message, message
    for fragment in fragments:
        assert str(fragment) in message, (fragment, message)
    return message


def test_data_modules_do_not_import_jax():
    """The host-side data code stays NumPy only: quick to import, usable by any framework."""
    code = ('import sys; import wtal_jax.data.dataset, wtal_jax.data.sampling, wtal_jax.data.pipeline, '
            'wtal_jax.data.synthetic, wtal_jax.data.synthetic_activitynet, wtal_jax.data.prepare; '
            'print(sorted(m for m in sys.modules if m.split(".")[0] in '
            '("jax", "jaxlib", "flax", "torch")))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '[]'


# ----------------------------------------------------------------------------------------------
# Class list and annotations


def test_thumos14_classes_are_the_spec_order():
    # SPEC §1, copied as written there.
    spec = ('BaseballPitch, BasketballDunk, Billiards, CleanAndJerk, CliffDiving, CricketBowling, '
            'CricketShot, Diving, FrisbeeCatch, GolfSwing, HammerThrow, HighJump, JavelinThrow, '
            'LongJump, PoleVault, Shotput, SoccerPenalty, TennisSwing, ThrowDiscus, '
            'VolleyballSpiking').split(', ')
    assert annotations_lib.THUMOS14_CLASSES == tuple(spec)
    # One constant: the config and the data modules hold the same object.
    assert config.THUMOS14_CLASSES is annotations_lib.THUMOS14_CLASSES


def test_real_thumos14_annotations(thumos14_dir):
    annotations = annotations_lib.load_annotations(os.path.join(thumos14_dir, 'gt.json'))
    assert len(annotations) == 410
    subsets = [a.subset for a in annotations.values()]
    assert subsets.count('test') == 210
    first = annotations['video_test_0000896']
    assert first.duration is None
    np.testing.assert_allclose(first.segments[0], [18.6, 24.8])  # written as strings
    assert first.labels[0] == 'HighJump'
    for subset in sorted(set(subsets)):
        names = annotations_lib.class_names_from(annotations, [subset], ())
        assert names == annotations_lib.THUMOS14_CLASSES


def test_real_thumos14_split_with_clipping(thumos14_dir, tmp_path):
    """Real annotations, fake features of each video's true length: clipped ends are counted."""
    with open(os.path.join(thumos14_dir, 'durations.json')) as f:
        durations = json.load(f)
    annotations = annotations_lib.load_annotations(os.path.join(thumos14_dir, 'gt.json'))
    with open(os.path.join(thumos14_dir, 'split_test.txt')) as f:
        names = f.read().split()[:12]
    lengths = {name: int(durations[name]['duration'] * 25 / 16) for name in names}
    for name in names:
        for stream in ('rgb', 'flow'):
            os.makedirs(tmp_path / 'f' / stream, exist_ok=True)
            np.save(tmp_path / 'f' / stream / (name + '.npy'),
                    np.ones((lengths[name], 4), np.float32))
    (tmp_path / 'split.txt').write_text('\n'.join(names))
    split = dataset.load_split(str(tmp_path), annotation_file=os.path.join(thumos14_dir, 'gt.json'),
                            split_file='split.txt', feature_dir='f', subset='test', modality='all',
                            class_names=annotations_lib.THUMOS14_CLASSES, feature_dim=8)
    expected_clipped = 0
    for v, name in enumerate(names):
        end = lengths[name] * 16 / 25
        expected_clipped += int((annotations[name].segments > end).any(axis=1).sum())
        assert split.gt[v].segments.max() <= end
        assert set(split.gt[v].classes.tolist()) == set(np.flatnonzero(split.labels[v]).tolist())
    assert split.num_clipped == expected_clipped
    np.testing.assert_array_equal(split.num_segments, [lengths[n] for n in names])


def test_annotations_accept_numbers_and_strings(tmp_path):
    path = str(tmp_path / 'gt.json')
    write_json(path, {'database': {
        'a': {'subset': 'test', 'duration': '12.5', 'annotations': [
            {'segment': [1, '2.5'], 'label': 'Run'}, {'segment': [3.0, 3.0], 'label': 'Jump'}]},
        'b': {'subset': 'test', 'annotations': []},
        'c': {'subset': 'test'}}})
    annotations = annotations_lib.load_annotations(path)
    assert list(annotations) == ['a', 'b', 'c']
    np.testing.assert_array_equal(annotations['a'].segments, [[1.0, 2.5], [3.0, 3.0]])
    assert annotations['a'].segments.dtype == np.float64
    assert annotations['a'].labels == ('Run', 'Jump')
    assert annotations['a'].duration == 12.5
    assert annotations['b'].segments.shape == (0, 2) and annotations['c'].labels == ()


def test_class_names_from():
    annotations = {
        'a': annotations_lib.VideoAnnotation('train', None, np.zeros((2, 2)), ('Swim', 'Jump')),
        'b': annotations_lib.VideoAnnotation('test', None, np.zeros((1, 2)), ('Zzz',))}
    assert annotations_lib.class_names_from(annotations, ['train'], ()) == ('Jump', 'Swim')
    assert annotations_lib.class_names_from(annotations, ['train', 'test'], ()) == ('Jump', 'Swim', 'Zzz')
    assert annotations_lib.class_names_from(annotations, ['train'], ['B', 'A']) == ('B', 'A')
    assert_one_line_error(lambda: annotations_lib.class_names_from(annotations, ['nope'], ()), 'nope')
    assert_one_line_error(lambda: annotations_lib.class_names_from(annotations, [], ['A', 'A']), 'A')


@pytest.mark.parametrize('content,fragments', [
    (None, ['not found']),
    ('{"database": ', ['not valid JSON']),
    ('[1, 2]', ['"database"']),
    ('{"db": {}}', ['"database"']),
    ('{"database": {"v1": {"subset": "test", "annotations": '
     '[{"segment": ["1.0", "abc"], "label": "Run"}]}}}', ['v1', "'abc'"]),
    ('{"database": {"v1": {"subset": "test", "annotations": '
     '[{"segment": ["1.0", null], "label": "Run"}]}}}', ['v1', 'None']),
    ('{"database": {"v1": {"subset": "test", "annotations": '
     '[{"segment": ["1.0", "NaN"], "label": "Run"}]}}}', ['v1', 'NaN']),
    ('{"database": {"v1": {"subset": "test", "annotations": '
     '[{"segment": [5, 2], "label": "Run"}]}}}', ['v1', '5.0', '2.0']),
    ('{"database": {"v1": {"subset": "test", "annotations": '
     '[{"segment": [1], "label": "Run"}]}}}', ['v1', 'segment']),
    ('{"database": {"v1": {"subset": "test", "annotations": '
     '[{"segment": [1, 2]}]}}}', ['v1', 'label']),
    ('{"database": {"v1": {"annotations": []}}}', ['v1', 'subset']),
    ('{"database": {"v1": {"subset": "test", "duration": -3}}}', ['v1', 'duration']),
])
def test_bad_annotation_files(tmp_path, content, fragments):
    path = tmp_path / 'gt.json'
    if content is not None:
        path.write_text(content)
    assert_one_line_error(lambda: annotations_lib.load_annotations(str(path)), str(path), *fragments)


# ----------------------------------------------------------------------------------------------
# Splits


def test_load_split_all_modalities(tmp_path):
    kwargs = make_dataset(tmp_path, {
        'v0': [(0.0, 1.28, 'Run'), (2.0, 3.0, 'Jump')],
        'v1': [(1.0, 1.0, 'Swim')],  # zero length: kept
        'v2': [(5.0, 9.0, 'Run')]},  # ends after the video (10 segments = 6.4 s): clipped
        lengths={'v1': 4})
    split = dataset.load_split(str(tmp_path), **kwargs)
    assert split.names == ('v0', 'v1', 'v2') and len(split) == 3
    assert split.class_names == CLASSES and split.feature_dim == 6
    np.testing.assert_array_equal(split.labels, [[1, 1, 0], [0, 0, 1], [0, 1, 0]])
    assert split.labels.dtype == np.float32
    np.testing.assert_array_equal(split.num_segments, [10, 4, 10])
    assert np.isnan(split.durations).all()
    for v, features in enumerate(split.features):
        assert features.dtype == np.float32
        np.testing.assert_array_equal(features[0], [10 * v] * 3 + [10 * v + 1] * 3)  # [rgb, flow]
    np.testing.assert_array_equal(split.gt[0].classes, [1, 0])
    np.testing.assert_allclose(split.gt[1].segments, [[1.0, 1.0]])
    np.testing.assert_allclose(split.gt[2].segments, [[5.0, 6.4]])
    assert split.num_clipped == 1

    rgb = dataset.load_split(str(tmp_path), **{**kwargs, 'modality': 'rgb', 'feature_dim': 3})
    flow = dataset.load_split(str(tmp_path), **{**kwargs, 'modality': 'flow', 'feature_dim': None})
    assert rgb.features[1][0, 0] == 10 and flow.features[1][0, 0] == 11
    assert flow.feature_dim == 3


def test_load_split_durations(tmp_path):
    kwargs = make_dataset(tmp_path, {'v0': [(1.0, 8.0, 'Run')]})
    db = json.loads((tmp_path / 'gt.json').read_text())
    db['database']['v0']['duration'] = 7.5
    write_json(str(tmp_path / 'gt.json'), db)
    by_segments = dataset.load_split(str(tmp_path), **kwargs)
    np.testing.assert_allclose(by_segments.gt[0].segments, [[1.0, 6.4]])
    assert by_segments.durations[0] == 7.5
    by_duration = dataset.load_split(str(tmp_path), **kwargs, use_duration=True)
    np.testing.assert_allclose(by_duration.gt[0].segments, [[1.0, 7.5]])
    longer = dataset.load_split(str(tmp_path), **kwargs, segment_seconds=1.0)
    np.testing.assert_allclose(longer.gt[0].segments, [[1.0, 8.0]])
    assert longer.num_clipped == 0


def test_unlabelled_videos(tmp_path):
    kwargs = make_dataset(tmp_path, {'v0': [(0, 1, 'Run')], 'v1': []}, subset='test',
                          split='test')
    split = dataset.load_split(str(tmp_path), **kwargs)
    np.testing.assert_array_equal(split.labels[1], [0, 0, 0])
    assert split.gt[1].segments.shape == (0, 2) and split.gt[1].classes.shape == (0,)
    # A training video needs a label: weak supervision has nothing else.
    assert_one_line_error(lambda: dataset.load_split(str(tmp_path), **kwargs, require_labels=True),
                          'v1', 'gt.json')


def test_progress_bar_does_not_change_the_result(tmp_path, capsys):
    kwargs = make_dataset(tmp_path, {'v0': [(0, 1, 'Run')]})
    split = dataset.load_split(str(tmp_path), **kwargs, progress=True)
    assert split.names == ('v0',)
    assert 'loading' in capsys.readouterr().err


class TestLoadSplitErrors:
    """Each bad input raises one UserError line naming the file or video and the numbers."""

    videos = {'v0': [(0, 1, 'Run')], 'v1': [(2, 3, 'Swim')]}

    def setup(self, tmp_path, **kw):
        return make_dataset(tmp_path, self.videos, **kw)

    def load(self, tmp_path, kwargs):
        return lambda: dataset.load_split(str(tmp_path), **kwargs)

    def test_missing_split_file(self, tmp_path):
        kwargs = self.setup(tmp_path)
        os.unlink(tmp_path / 'split_train.txt')
        assert_one_line_error(self.load(tmp_path, kwargs), 'split_train.txt', 'not found')

    def test_empty_split(self, tmp_path):
        kwargs = self.setup(tmp_path)
        (tmp_path / 'split_train.txt').write_text('\n  \n')
        assert_one_line_error(self.load(tmp_path, kwargs), 'split_train.txt', 'no videos')

    def test_repeated_video(self, tmp_path):
        kwargs = self.setup(tmp_path)
        (tmp_path / 'split_train.txt').write_text('v0\nv1\nv0\n')
        assert_one_line_error(self.load(tmp_path, kwargs), 'split_train.txt', 'v0')

    def test_video_without_annotation_entry(self, tmp_path):
        kwargs = self.setup(tmp_path)
        (tmp_path / 'split_train.txt').write_text('v0\nv9\n')
        assert_one_line_error(self.load(tmp_path, kwargs), 'v9', 'split_train.txt', 'gt.json')

    def test_wrong_subset(self, tmp_path):
        kwargs = self.setup(tmp_path)
        assert_one_line_error(self.load(tmp_path, {**kwargs, 'subset': 'validation'}),
                              'v0', "'train'", "'validation'")

    def test_missing_annotation_file(self, tmp_path):
        kwargs = self.setup(tmp_path)
        os.unlink(tmp_path / 'gt.json')
        assert_one_line_error(self.load(tmp_path, kwargs), 'gt.json', 'not found')

    def test_unknown_label(self, tmp_path):
        kwargs = self.setup(tmp_path)
        assert_one_line_error(self.load(tmp_path, {**kwargs, 'class_names': ('Run', 'Jump')}),
                              'v1', "'Swim'", '2 configured classes')

    def test_bad_class_list_and_modality(self, tmp_path):
        kwargs = self.setup(tmp_path)
        assert_one_line_error(self.load(tmp_path, {**kwargs, 'class_names': ()}), 'empty')
        assert_one_line_error(self.load(tmp_path, {**kwargs, 'modality': 'depth'}), "'depth'")

    def test_missing_feature_file(self, tmp_path):
        kwargs = self.setup(tmp_path)
        os.unlink(feature_path(tmp_path, 'v1', 'flow'))
        assert_one_line_error(self.load(tmp_path, kwargs), 'split_train.txt', '1 of 2 videos',
                              '(v1)', 'data.missing=skip')

    def test_pickled_object_array(self, tmp_path):
        kwargs = self.setup(tmp_path)
        np.save(feature_path(tmp_path, 'v0'), np.array([{'x': 1}, None], dtype=object),
                allow_pickle=True)
        assert_one_line_error(self.load(tmp_path, kwargs), feature_path(tmp_path, 'v0'),
                              'object array', 'never loaded')

    def test_pickle_is_refused_before_it_is_loaded(self, tmp_path, monkeypatch):
        """The header alone decides: np.load is never reached for an object array."""
        kwargs = self.setup(tmp_path)
        np.save(feature_path(tmp_path, 'v0'), np.array([1, None], dtype=object), allow_pickle=True)
        monkeypatch.setattr(np, 'load', lambda *a, **k: pytest.fail('np.load was called'))
        assert_one_line_error(self.load(tmp_path, kwargs), 'object array')

    @pytest.mark.parametrize('shape,size', [((2 ** 32, 2 ** 12), '64.0 TiB'),
                                            ((46 * 2 ** 40 // 4, 1), '46.0 TiB'),
                                            ((11, 3), '132 bytes')])
    def test_header_claiming_more_than_the_file_holds(self, tmp_path, shape, size):
        """A forged or truncated header is one line, not a MemoryError (issue 11 item 7)."""
        kwargs = self.setup(tmp_path)
        path = feature_path(tmp_path, 'v0')
        with open(path, 'wb') as f:   # a real header, with the real 10 x 3 float32 data after it
            np.lib.format.write_array_header_1_0(
                f, {'descr': '<f4', 'fortran_order': False, 'shape': shape})
            f.write(np.ones((10, 3), np.float32).tobytes())
        message = assert_one_line_error(self.load(tmp_path, kwargs), path, 'not a readable .npy',
                                        str(shape), size, '120 bytes')
        assert 'MemoryError' not in message

    def test_header_version_2(self, tmp_path):
        kwargs = self.setup(tmp_path)
        path = feature_path(tmp_path, 'v0')
        with open(path, 'wb') as f:
            np.lib.format.write_array(f, np.full((10, 3), 7, np.float32), version=(2, 0))
        assert dataset.load_split(str(tmp_path), **kwargs).features[0][0, 0] == 7

    @pytest.mark.parametrize('video', ['../v0', '/etc/v0', 'a/../../v0', '..', '.', 'sub\\v0',
                                       'v\x000'])
    def test_video_ids_that_leave_the_feature_folder(self, tmp_path, video):
        """Split-file ids are joined into paths: none may leave the folder (issue 11 item 5)."""
        kwargs = self.setup(tmp_path)
        outside = tmp_path / 'v0.npy'     # a readable file outside the feature folder
        np.save(outside, np.ones((10, 3), np.float32))
        (tmp_path / 'split_train.txt').write_text(f'v0\n{video}\n')
        assert_one_line_error(self.load(tmp_path, kwargs), 'split_train.txt', repr(video),
                              'not a plain file name')

    def test_plain_pickle(self, tmp_path):
        import pickle
        kwargs = self.setup(tmp_path)
        with open(feature_path(tmp_path, 'v0'), 'wb') as f:
            pickle.dump(np.ones((10, 3), np.float32), f)
        assert_one_line_error(self.load(tmp_path, kwargs), feature_path(tmp_path, 'v0'),
                              'no NumPy header')

    def test_truncated_file(self, tmp_path):
        kwargs = self.setup(tmp_path)
        path = feature_path(tmp_path, 'v0')
        content = open(path, 'rb').read()
        with open(path, 'wb') as f:
            f.write(content[:-20])
        assert_one_line_error(self.load(tmp_path, kwargs), path, 'not a readable .npy')

    def test_text_file_named_npy(self, tmp_path):
        kwargs = self.setup(tmp_path)
        with open(feature_path(tmp_path, 'v0'), 'w') as f:
            f.write('1 2 3\n4 5 6\n')
        assert_one_line_error(self.load(tmp_path, kwargs), feature_path(tmp_path, 'v0'),
                              'no NumPy header')

    def test_npz_archive(self, tmp_path):
        kwargs = self.setup(tmp_path)
        with open(feature_path(tmp_path, 'v0'), 'wb') as f:
            np.savez(f, a=np.ones((10, 3), np.float32))
        assert_one_line_error(self.load(tmp_path, kwargs), feature_path(tmp_path, 'v0'),
                              'npz archive')

    def test_string_array(self, tmp_path):
        kwargs = self.setup(tmp_path)
        np.save(feature_path(tmp_path, 'v0'), np.array([['a', 'b', 'c']] * 10))
        assert_one_line_error(self.load(tmp_path, kwargs), feature_path(tmp_path, 'v0'), 'dtype')

    def test_length_mismatch(self, tmp_path):
        kwargs = self.setup(tmp_path)
        np.save(feature_path(tmp_path, 'v1', 'flow'), np.ones((11, 3), np.float32))
        assert_one_line_error(self.load(tmp_path, kwargs), 'v1', feature_path(tmp_path, 'v1'),
                              'has 10', 'has 11')

    def test_wrong_feature_size(self, tmp_path):
        kwargs = self.setup(tmp_path)
        assert_one_line_error(self.load(tmp_path, {**kwargs, 'feature_dim': 2048}),
                              'v0', 'expected feature_dim 2048', '6 values', '3 + 3')

    def test_feature_size_differs_between_videos(self, tmp_path):
        kwargs = self.setup(tmp_path)
        for stream in ('rgb', 'flow'):
            np.save(feature_path(tmp_path, 'v1', stream), np.ones((10, 4), np.float32))
        assert_one_line_error(self.load(tmp_path, {**kwargs, 'feature_dim': None}),
                              'v1', '8 values', 'v0', '6')

    @pytest.mark.parametrize('shape', [(10,), (10, 3, 1), ()])
    def test_not_two_dimensional(self, tmp_path, shape):
        kwargs = self.setup(tmp_path)
        np.save(feature_path(tmp_path, 'v0'), np.ones(shape, np.float32))
        assert_one_line_error(self.load(tmp_path, kwargs), feature_path(tmp_path, 'v0'),
                              str(shape))

    @pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
    def test_non_finite(self, tmp_path, bad):
        kwargs = self.setup(tmp_path)
        features = np.ones((10, 3), np.float32)
        features[7, 1] = bad
        features[9, 0] = bad
        np.save(feature_path(tmp_path, 'v1', 'flow'), features)
        assert_one_line_error(self.load(tmp_path, kwargs), feature_path(tmp_path, 'v1', 'flow'),
                              'segment 7 of 10')

    def test_zero_segments(self, tmp_path):
        kwargs = self.setup(tmp_path)
        for stream in ('rgb', 'flow'):
            np.save(feature_path(tmp_path, 'v0', stream), np.ones((0, 3), np.float32))
        assert_one_line_error(self.load(tmp_path, kwargs), feature_path(tmp_path, 'v0'),
                              'zero segments')


def test_missing_features_error_counts_all_and_names_the_first(tmp_path):
    videos = {f'v{i}': [(0, 1, 'Run')] for i in range(9)}
    kwargs = make_dataset(tmp_path, videos)
    for i in (1, 3, 4, 6, 7, 8):  # six missing: the message counts six and names five
        os.unlink(feature_path(tmp_path, f'v{i}', 'rgb' if i % 2 else 'flow'))
    assert_one_line_error(lambda: dataset.load_split(str(tmp_path), **kwargs),
                          'split_train.txt', '6 of 9 videos', 'v1, v3, v4, v6, v7, ...',
                          os.path.join(str(tmp_path), 'features/train'))


def test_missing_features_skipped(tmp_path):
    videos = {'v0': [(0, 1, 'Run')], 'v1': [(2, 3, 'Swim')], 'v2': [(1, 2, 'Jump')],
              'v3': [(0, 5, 'Run')]}
    kwargs = make_dataset(tmp_path, videos, lengths={'v2': 7})
    os.unlink(feature_path(tmp_path, 'v1', 'flow'))
    os.unlink(feature_path(tmp_path, 'v3', 'rgb'))
    os.unlink(feature_path(tmp_path, 'v3', 'flow'))
    split = dataset.load_split(str(tmp_path), **kwargs, missing='skip')
    assert split.names == ('v0', 'v2') and split.missing == ('v1', 'v3')
    np.testing.assert_array_equal(split.labels, [[0, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(split.num_segments, [10, 7])
    assert len(split.features) == len(split.gt) == len(split.durations) == 2
    np.testing.assert_array_equal(split.features[1][0], [20, 20, 20, 21, 21, 21])  # v2's own
    # The one-stream modality needs only its own stream.
    rgb = dataset.load_split(str(tmp_path), **{**kwargs, 'modality': 'rgb', 'feature_dim': 3},
                             missing='skip')
    assert rgb.names == ('v0', 'v1', 'v2') and rgb.missing == ('v3',)
    # Only an absent file is skipped: a present but broken one is still an error.
    np.save(feature_path(tmp_path, 'v2'), np.ones((7, 3), object), allow_pickle=True)
    assert_one_line_error(lambda: dataset.load_split(str(tmp_path), **kwargs, missing='skip'),
                          feature_path(tmp_path, 'v2'), 'object array')


def test_missing_everything_or_an_unknown_policy(tmp_path):
    kwargs = make_dataset(tmp_path, {'v0': [(0, 1, 'Run')], 'v1': [(0, 1, 'Run')]})
    for v in ('v0', 'v1'):
        os.unlink(feature_path(tmp_path, v))
    assert_one_line_error(lambda: dataset.load_split(str(tmp_path), **kwargs, missing='skip'),
                          'none of its 2 videos')
    assert_one_line_error(lambda: dataset.load_split(str(tmp_path), **kwargs, missing='ignore'),
                          "'ignore'", 'error, skip')


def test_complete_split_has_no_missing(tmp_path):
    kwargs = make_dataset(tmp_path, {'v0': [(0, 1, 'Run')]})
    assert dataset.load_split(str(tmp_path), **kwargs, missing='skip').missing == ()
    assert dataset.load_split(str(tmp_path), **kwargs).missing == ()


def test_float16_features_are_read_as_float32(tmp_path):
    kwargs = make_dataset(tmp_path, {'v0': [(0, 1, 'Run')]})
    values = np.array([[0.1, 65504.0, -2.5]] * 10, np.float16)
    np.save(feature_path(tmp_path, 'v0'), values)
    array = dataset.load_feature_array(feature_path(tmp_path, 'v0'))
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, values.astype(np.float32))  # exact: float16 ⊂ float32
    split = dataset.load_split(str(tmp_path), **kwargs)
    assert split.features[0].dtype == np.float32
    np.testing.assert_array_equal(split.features[0][:, :3], values.astype(np.float32))


def test_read_npy_header(tmp_path):
    path = str(tmp_path / 'a.npy')
    np.save(path, np.zeros((5, 4), np.float16))
    header = dataset.read_npy_header(path)
    assert header.shape == (5, 4) and header.dtype == np.float16
    assert header.data_bytes == header.declared_bytes == 5 * 4 * 2
    assert dataset.check_feature_header(path) == header
    np.save(path, np.zeros((5, 0), np.float32))
    assert_one_line_error(lambda: dataset.check_feature_header(path), 'zero values per segment')


def test_other_numeric_dtypes_become_float32(tmp_path):
    kwargs = make_dataset(tmp_path, {'v0': [(0, 1, 'Run')]})
    np.save(feature_path(tmp_path, 'v0'), np.arange(30, dtype=np.float64).reshape(10, 3))
    np.save(feature_path(tmp_path, 'v0', 'flow'), np.ones((10, 3), np.int16))
    split = dataset.load_split(str(tmp_path), **kwargs)
    assert split.features[0].dtype == np.float32
    np.testing.assert_array_equal(split.features[0][1], [3, 4, 5, 1, 1, 1])


# ----------------------------------------------------------------------------------------------
# Files given to ``detect``


def test_load_feature_files(tmp_path):
    rgb, flow = str(tmp_path / 'rgb.npy'), str(tmp_path / 'flow.npy')
    np.save(rgb, np.zeros((5, 2), np.float32))
    np.save(flow, np.ones((5, 3), np.float32))
    one = dataset.load_feature_files([rgb])
    assert one.shape == (5, 2) and one.dtype == np.float32
    both = dataset.load_feature_files([rgb, flow], feature_dim=5)
    np.testing.assert_array_equal(both[0], [0, 0, 1, 1, 1])
    assert_one_line_error(lambda: dataset.load_feature_files([rgb, flow], feature_dim=4),
                          'expected feature_dim 4', '5 values', rgb)
    assert_one_line_error(lambda: dataset.load_feature_files([rgb, flow, rgb]), '3')
    assert_one_line_error(lambda: dataset.load_feature_files([]), '0')
    np.save(flow, np.ones((6, 3), np.float32))
    assert_one_line_error(lambda: dataset.load_feature_files([rgb, flow]), 'has 5', 'has 6')
    assert_one_line_error(lambda: dataset.load_feature_files([str(tmp_path / 'x.npy')]),
                          'x.npy', 'not found')


# ----------------------------------------------------------------------------------------------
# Files that are not what they seem: read bounded, said for what they are


def test_a_byte_order_mark_is_not_part_of_the_first_video_id(tmp_path):
    kwargs = make_dataset(tmp_path, {'v0': [(0, 1, 'Run')], 'v1': [(2, 3, 'Swim')]})
    (tmp_path / 'split_train.txt').write_bytes(b'\xef\xbb\xbfv0\r\nv1\r\n')   # Notepad's form
    assert dataset.read_split_file(str(tmp_path / 'split_train.txt')) == ('v0', 'v1')
    assert dataset.load_split(str(tmp_path), **kwargs).names == ('v0', 'v1')


@pytest.mark.parametrize('kind', ['folder', 'symbolic link loop', 'named pipe (FIFO)'])
def test_a_feature_path_holding_something_else_is_said_for_what_it_is(tmp_path, kind):
    kwargs = make_dataset(tmp_path, {'v0': [(0, 1, 'Run')], 'v1': [(2, 3, 'Swim')]})
    path = feature_path(tmp_path, 'v1', 'flow')
    os.unlink(path)
    if kind == 'folder':
        os.mkdir(path)
    elif kind == 'named pipe (FIFO)':
        os.mkfifo(path)
    else:
        os.symlink(path + '.other', path)
        os.symlink(path, path + '.other')
    for skip in ('error', 'skip'):   # not a missing file: no policy leaves it out
        message = assert_one_line_error(
            lambda: dataset.load_split(str(tmp_path), **kwargs, missing=skip),
            f'{path}: is a {kind}, expected a .npy feature file')
        assert 'no feature files' not in message
    assert_one_line_error(lambda: dataset.load_feature_files([path]), path, f'is a {kind}')


def test_a_dangling_link_is_a_missing_feature_file(tmp_path):
    """A link into a release that moved is missing, as before, and data.missing=skip skips it."""
    kwargs = make_dataset(tmp_path, {'v0': [(0, 1, 'Run')], 'v1': [(2, 3, 'Swim')]})
    path = feature_path(tmp_path, 'v1', 'flow')
    os.unlink(path)
    os.symlink(str(tmp_path / 'moved.npy'), path)
    assert_one_line_error(lambda: dataset.load_split(str(tmp_path), **kwargs),
                          '1 of 2 videos have no feature files', '(v1)')
    assert dataset.load_split(str(tmp_path), **kwargs, missing='skip').missing == ('v1',)


def test_float64_beyond_float32_is_one_line_without_a_warning(tmp_path):
    path = str(tmp_path / 'big.npy')
    values = np.ones((10, 3))
    values[4, 2] = -1e300
    values[6, 0] = 1e39   # beyond float32's 3.4e38 too, but later
    np.save(path, values)
    with warnings.catch_warnings():
        warnings.simplefilter('error')   # NumPy's 'overflow encountered in cast' was printed
        assert_one_line_error(lambda: dataset.load_feature_array(path),
                              f'{path}: value -1e+300 at segment 4 of 10 is beyond float32 (at '
                              'most 3.40282e+38 in magnitude)')
    values[4, 2] = np.finfo(np.float32).max   # the largest float32 itself fits
    values[6, 0] = -np.finfo(np.float32).max
    np.save(path, values)
    np.testing.assert_array_equal(dataset.load_feature_array(path), values.astype(np.float32))


def _sparse_npy(path, shape, dtype='<f4'):
    """A .npy whose header declares ``shape`` and whose size matches it, holes (zeros) only:
    it passes the file-size check and takes no disk space."""
    with open(path, 'wb') as f:
        np.lib.format.write_array_header_1_0(f, {'descr': dtype, 'fortran_order': False,
                                                 'shape': shape})
        f.truncate(f.tell() + math.prod(shape) * np.dtype(dtype).itemsize)


def test_an_array_larger_than_the_memory_is_refused_before_loading(tmp_path, monkeypatch):
    available = io_utils.available_memory_bytes()
    with open('/proc/meminfo') as f:   # read here on its own, not through the function
        mem_available = next(int(line.split()[1]) * 1024 for line in f
                             if line.startswith('MemAvailable:'))
    assert abs(available - mem_available) < 2 ** 30   # the same figure, a moment later
    rows = available // 2 ** 20 + 1                    # (rows, 2 ** 18) float32 > available
    path = str(tmp_path / 'huge.npy')
    _sparse_npy(path, (rows, 2 ** 18))
    assert dataset.read_npy_header(path).declared_bytes == rows * 2 ** 20   # the size matches
    monkeypatch.setattr(np, 'load', lambda *a, **k: pytest.fail('np.load was called'))
    message = assert_one_line_error(lambda: dataset.load_feature_array(path), path,
                                    f'the header declares ({rows}, 262144) float32; loading it '
                                    'needs about', 'of memory available')
    need, have = re.search(r'needs about (.*), more than the (.*) of memory', message).groups()
    assert need.endswith('GiB') and float(need.split()[0]) > float(have.split()[0]) * 0.99


def test_the_memory_estimate_counts_the_float32_copy(tmp_path, monkeypatch):
    """float64 (n, D): the array, its float32 copy, a byte per value for the finite mask."""
    path = str(tmp_path / 'a.npy')
    np.save(path, np.ones((100, 10)))
    need = 100 * 10 * (8 + 4 + 1)
    monkeypatch.setattr(dataset, 'available_memory_bytes', lambda: need)
    assert dataset.load_feature_array(path).shape == (100, 10)
    monkeypatch.setattr(dataset, 'available_memory_bytes', lambda: need - 1)
    assert_one_line_error(lambda: dataset.load_feature_array(path),
                          'needs about 12.7 KiB, more than the 12.7 KiB')


def test_negative_starts_are_counted_apart_from_ends_after_the_video(tmp_path):
    videos = {'v0': [(-2.0, 1.0, 'Run'), (1.0, 2.0, 'Jump')], 'v1': [(-1.0, 9.0, 'Swim')],
              'v2': [(3.0, 5.0, 'Run')]}
    kwargs = make_dataset(tmp_path, videos, lengths={'v0': 10, 'v1': 10, 'v2': 10})
    split = dataset.load_split(str(tmp_path), **kwargs)   # each video ends at 6.4 s
    assert split.num_before_start == 2   # v0's first, v1's
    assert split.num_clipped == 1        # v1's ends at 9.0 > 6.4
    np.testing.assert_array_equal(split.gt[0].segments, [[0.0, 1.0], [1.0, 2.0]])
    np.testing.assert_array_equal(split.gt[1].segments, [[0.0, 6.4]])


# ``train`` on a broken copy of a small synthetic data set, through the command line; all
# cases at once (each is slow to start and quick to fail).
TRAIN_ARGS = ['--config.synthetic.enabled=false', '--config.data.feature_dim=16',
              '--config.data.num_segments=32', '--config.model.embed_dim=32',
              '--config.train.batch_size=8', '--config.train.num_steps=1', '--quiet']


def _train_split(root):
    with open(os.path.join(root, 'split_train.txt')) as f:
        return f.read().split()


def _bom_and_a_later_missing_file(root):
    """The BOM must not hide the first id; the second video's missing rgb is then what is said."""
    names = _train_split(root)
    with open(os.path.join(root, 'split_train.txt'), 'w', encoding='utf-8-sig') as f:
        f.write('\n'.join(names) + '\n')
    os.unlink(os.path.join(root, 'features', 'train', 'rgb', names[1] + '.npy'))
    return [f'1 of {len(names)} videos have no feature files', f'({names[1]})']


def _feature_is(kind):
    def make(root):
        path = os.path.join(root, 'features', 'train', 'flow', _train_split(root)[0] + '.npy')
        os.unlink(path)
        if kind == 'folder':
            os.mkdir(path)
        else:
            os.symlink(path, path)
        return [f'{path}: is a {kind}, expected a .npy feature file']
    return make


def _split_file_is_a_fifo(root):
    path = os.path.join(root, 'split_train.txt')
    os.unlink(path)
    os.mkfifo(path)
    return [f'{path}: cannot read: is a named pipe (FIFO), expected a split file']


def _fingerprints(root):
    """Content hash and modification time of every regular file below ``root``."""
    found = {}
    for here, _, files in os.walk(root):
        for name in files:
            path = os.path.join(here, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, 'rb') as f:
                    found[path] = (hashlib.sha256(f.read()).hexdigest(),
                                   os.stat(path).st_mtime_ns)
    return found


BAD_TRAIN_DATA = {'byte-order mark': _bom_and_a_later_missing_file,
                  'feature path is a folder': _feature_is('folder'),
                  'feature path is a symbolic link loop': _feature_is('symbolic link loop'),
                  'split file is a FIFO': _split_file_is_a_fifo}


@pytest.fixture(scope='module')
def bad_train_data(tmp_path_factory):
    from wtal_jax.data import synthetic
    base = tmp_path_factory.mktemp('bad_data')
    clean = str(base / 'clean')
    synthetic.generate(clean, num_classes=3, num_train=20, num_test=8, feature_dim=8,
                       min_segments=20, max_segments=60, seed=0)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=repo)
    runs = {}
    for case, breaker in BAD_TRAIN_DATA.items():
        root = str(base / case.replace(' ', '_') / 'data')
        shutil.copytree(clean, root)
        words = breaker(root)
        before = _fingerprints(root)
        argv = [sys.executable, '-m', 'wtal_jax', 'train', '--config',
                os.path.join(repo, 'configs', 'synthetic.py'), '--workdir',
                str(base / case.replace(' ', '_') / 'run'), f'--config.data.root={root}',
                *TRAIN_ARGS]
        runs[case] = (subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, env=env), words, root, before)
    results = {}
    for case, (proc, words, root, before) in runs.items():
        try:   # the old reader waited for ever for a writer to the FIFO
            out, err = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            err += '\n(timed out)'
        results[case] = (proc.returncode, out, err, words, root, before)
    return results


@pytest.mark.parametrize('case', sorted(BAD_TRAIN_DATA))
def test_train_says_what_a_data_file_is_in_one_line(bad_train_data, case):
    status, out, err, words, root, before = bad_train_data[case]
    assert status == 2, f'rc {status}\n{out}\n{err}'
    lines = err.strip().splitlines()
    assert len(lines) == 1 and 'Traceback' not in err + out, err
    assert lines[0].startswith('wtal-jax train: error: '), lines[0]
    assert all(word in lines[0] for word in words), (words, lines[0])
    assert '\ufeff' not in err
    assert _fingerprints(root) == before   # the data set untouched
