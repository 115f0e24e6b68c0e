"""The one annotation reader (wtal_jax.data.annotations): what training and evaluation both read,
and one-line errors for what they both refuse. The file-format cases shared with training are in
test_data.py, the evaluation's in test_eval_files.py."""

import json
import os

import numpy as np
import pytest

from wtal_jax.data import annotations
from wtal_jax.errors import UserError
from wtal_jax.postprocess import eval_files
from test_data import assert_one_line_error


def write(path, text):
    path.write_text(text)
    return str(path)


def test_training_and_evaluation_read_the_same_real_file(thumos14_dir):
    path = os.path.join(thumos14_dir, 'gt.json')
    with open(path) as f:
        database = json.load(f)['database']
    parsed = annotations.load_annotations(path)
    gt = eval_files.load_ground_truth(path, 'test')
    test_videos = [v for v, e in database.items() if e['subset'] == 'test']
    assert list(gt.video_names) == test_videos
    for i, video in enumerate(gt.video_names):
        # Every instance as written in the file, in file order, with the same labels.
        written = [(a['label'], float(a['segment'][0]), float(a['segment'][1]))
                   for a in database[video]['annotations']]
        rows = gt.video == i
        assert [(gt.class_names[c], s, e) for c, (s, e) in
                zip(gt.label[rows], gt.segments[rows].tolist())] == written
        assert parsed[video].labels == tuple(w[0] for w in written)
        np.testing.assert_array_equal(parsed[video].segments, [w[1:] for w in written])


@pytest.mark.parametrize('text, fragments', [
    ('[' * 100_000 + ']' * 100_000, ['nested too deeply']),
    ('{"database": {"v": {"subset": "test", "annotations": [{"label": "A", "segment": [0, '
     + '1' * 400 + ']}]}}}', ['segment bound', 'is not a number']),
    ('{"database": {"v": {"subset": "test", "annotations": [{"label": "A", "segment": '
     '["0", "1e999"]}]}}}', ['segment bound', "'1e999' is not finite"]),
    ('{"database": {"v": {"subset": "test", "annotations": [{"label": "A", "segment": '
     '[0, true]}]}}}', ['segment bound True is not a number']),
    ('{"database": {"v": {"subset": "test", "annotations": [{"label": "A", "segment": '
     + '[' * 500 + ']' * 500 + '}]}}}',
     ['annotation 0: segment [[[[[[[...]]]]]]] is not [start, end]']),
    ('{"database": {"v": {"subset": "test", "annotations": [{"label": ["A"], "segment": '
     '[0, 1]}]}}}', ["label ['A'] is not a string"]),
    ('{"database": {"v": {"subset": "test", "annotations": {"label": "A"}}}}',
     ['"annotations" is a dict, expected a list']),
    ('{"database": {"v": []}}', ['video v: entry is a list']),
    (b'\xff\xfe'.decode('latin-1'), ['not valid JSON']),
    ('{"database": {"v": {"subset": "test", "annotations": [{"label": "A", "segment": [0, 1]}]}, '
     '"v": {"subset": "test", "annotations": []}}}', ["key 'v' is given twice in one object"]),
    ('{"database": {"v": {"subset": "test", "annotations": [{"label": "A", "segment": [0, '
     + '1' * 4301 + ']}]}}}', ['an integer of 4301 digits', 'at most 4300 digits']),
], ids=['deep', 'huge-int', 'inf', 'bool', 'deep-segment', 'label', 'annotations', 'entry',
        'bytes', 'repeated-video', 'longer-than-python-reads'])
def test_bad_files_give_one_line(tmp_path, text, fragments):
    path = write(tmp_path / 'gt.json', text)
    for read in (annotations.load_annotations,
                 lambda p: eval_files.load_ground_truth(p, 'test')):
        assert_one_line_error(lambda: read(path), path, *fragments)


def test_a_folder_is_one_line(tmp_path):
    assert_one_line_error(lambda: annotations.load_annotations(str(tmp_path)), str(tmp_path),
                    'is a folder')


def test_seconds_and_segments():
    assert annotations.seconds('18.6', 'x') == 18.6
    assert annotations.seconds(np.float32(0.5), 'x') == 0.5
    assert annotations.parse_segment(('1', 2), 'x') == (1.0, 2.0)
    assert annotations.parse_segment(np.array([3.0, 3.0]), 'x') == (3.0, 3.0)  # zero length
    for bad in (np.array(3.0), [1, 2, 3], 'ab', None):
        with pytest.raises(UserError, match='is not \\[start, end\\]'):
            annotations.parse_segment(bad, 'x')
    with pytest.raises(UserError, match=r'x: segment \[2.0, 1.0\] ends before it starts'):
        annotations.parse_segment([2, 1], 'x')
