"""Tests for wtal_jax.postprocess.eval_files: ground truth, predictions and tIoU thresholds,
read as the official evaluation reads them, and every way they can be wrong in one line."""

import re

import numpy as np
import pytest

from wtal_jax.errors import UserError
from wtal_jax.postprocess import average_precision, eval_files
from evaluation_cases import (THUMOS_THRESHOLDS, gt_doc, pred_doc, write_json)


def test_string_bounds_are_read_as_numbers(tmp_path):
    gt_json = {'database': {'v1': {'subset': 'test', 'annotations': [
        {'label': 'A', 'segment': ['18.6', '24.8']}]}}}
    gt = eval_files.load_ground_truth(write_json(tmp_path / 'gt.json', gt_json), 'test')
    assert gt.segments.tolist() == [[18.6, 24.8]]
    preds = eval_files.load_predictions({'results': {'v1': [
        {'label': 'A', 'score': 1, 'segment': ['18.6', 24.8]}]}}, gt)
    assert preds.segments.tolist() == [[18.6, 24.8]] and preds.score.dtype == np.float64


def test_numpy_scalars_and_tuples_are_accepted(tmp_path):
    gt = eval_files.load_ground_truth(write_json(tmp_path / 'gt.json', gt_doc({'v1': [('A', 0, 1)]})),
                              'test')
    preds = eval_files.load_predictions({'results': {'v1': [
        {'label': 'A', 'score': np.float32(0.5), 'segment': (np.float64(0), np.int64(1))}]}}, gt)
    assert preds.score.tolist() == [0.5] and preds.segments.tolist() == [[0.0, 1.0]]


# ---------------------------------------------------------------------------------------------
# Bad input


def _gt_file(tmp_path, annotations, subset='test'):
    return write_json(tmp_path / 'gt.json', {'database': {'vid1': {
        'subset': subset, 'annotations': annotations}}})


@pytest.mark.parametrize('segment, problem', [
    ([5, 3], 'ends before it starts'),
    (['nan', 3], 'not finite'),
    ([float('nan'), 3], 'not finite'),
    ([0, 'Infinity'], 'not finite'),
    (['abc', 3], 'not a number'),
    ([None, 3], 'not a number'),
    ([1], 'is not [start, end]'),
])
def test_bad_ground_truth_segments(tmp_path, segment, problem):
    path = _gt_file(tmp_path, [{'label': 'A', 'segment': [0, 1]},
                               {'label': 'A', 'segment': segment}])
    with pytest.raises(UserError, match=re.escape(problem)) as info:
        eval_files.load_ground_truth(path, 'test')
    assert path in str(info.value) and 'vid1' in str(info.value)
    assert 'annotation 1' in str(info.value)


def test_missing_or_malformed_ground_truth_file(tmp_path):
    with pytest.raises(UserError, match='cannot read'):
        eval_files.load_ground_truth(str(tmp_path / 'nope.json'), 'test')
    (tmp_path / 'bad.json').write_text('{"database": ')
    with pytest.raises(UserError, match='not valid JSON'):
        eval_files.load_ground_truth(str(tmp_path / 'bad.json'), 'test')
    with pytest.raises(UserError, match='no "database"'):
        eval_files.load_ground_truth(write_json(tmp_path / 'x.json', {'videos': {}}), 'test')


def test_subset_without_videos_or_annotations(tmp_path):
    path = _gt_file(tmp_path, [{'label': 'A', 'segment': [0, 1]}], subset='train')
    with pytest.raises(UserError, match="no video of subset 'test'.*'train'"):
        eval_files.load_ground_truth(path, 'test')
    with pytest.raises(UserError, match='no annotations'):
        eval_files.load_ground_truth(_gt_file(tmp_path, []), 'test')


def test_deeply_nested_json_is_one_line(tmp_path):
    path = tmp_path / 'deep.json'
    path.write_text('[' * 100_000 + ']' * 100_000)
    gt = eval_files.load_ground_truth(write_json(tmp_path / 'gt.json', gt_doc({'v1': [('A', 0, 1)]})),
                              'test')
    for call in (lambda: eval_files.load_ground_truth(str(path), 'test'),
                 lambda: eval_files.load_predictions(str(path), gt)):
        with pytest.raises(UserError, match='nested too deeply') as info:
            call()
        assert str(path) in str(info.value) and '\n' not in str(info.value)


def test_warnings_name_uncovered_videos_and_outside_predictions(tmp_path):
    videos = {f'v{i:03d}': [('A', 0, 1)] for i in range(100)}
    gt = eval_files.load_ground_truth(write_json(tmp_path / 'gt.json', gt_doc(videos)), 'test')
    # Predictions for 2 of the 100 videos, an empty list for a third, one video outside.
    preds = eval_files.load_predictions(pred_doc({'v005': [('A', 0.5, 0, 1)], 'v007': [('A', 0.5, 0, 1)],
                                          'v009': [], 'x': [('A', 0.5, 0, 1)]}), gt)
    missing = eval_files.videos_without_predictions(gt, preds)
    assert missing == tuple(v for v in videos if v not in ('v005', 'v007'))
    lines = eval_files.input_warnings(gt, preds)
    assert len(lines) == 2
    assert lines[0].startswith('1 predictions are for videos outside subset')
    assert lines[1].startswith("98 of the 100 ground-truth videos of subset 'test' have no "
                               'predictions (first: v000)')
    full = eval_files.load_predictions(pred_doc({v: [('A', 0.5, 0, 1)] for v in videos}), gt)
    assert eval_files.input_warnings(gt, full) == [] and eval_files.videos_without_predictions(gt, full) == ()


@pytest.fixture
def small_gt(tmp_path):
    return eval_files.load_ground_truth(write_json(tmp_path / 'gt.json', gt_doc({
        'v1': [('A', 0, 10)], 'v2': [('B', 0, 10)]})), 'test')


def test_unknown_labels_are_listed(small_gt):
    results = {'v1': [{'label': f'X{i}', 'score': 0.5, 'segment': [0, 1]} for i in range(7)]}
    results['v2'] = [{'label': 'A', 'score': 0.5, 'segment': [0, 1]}]
    with pytest.raises(UserError) as info:
        eval_files.load_predictions({'results': results}, small_gt)
    message = str(info.value)
    assert "7 predicted labels" in message and "'X0' (video v1)" in message
    assert "'X4'" in message and "'X5'" not in message and 'and 2 more' in message


@pytest.mark.parametrize('entry, problem', [
    ({'label': 'A', 'score': 0.5, 'segment': [3, 2]}, 'ends before it starts'),
    ({'label': 'A', 'score': float('nan'), 'segment': [0, 1]}, 'not a finite number'),
    ({'label': 'A', 'score': float('inf'), 'segment': [0, 1]}, 'not a finite number'),
    ({'label': 'A', 'score': '0.5', 'segment': [0, 1]}, 'not a finite number'),
    ({'label': 'A', 'score': True, 'segment': [0, 1]}, 'not a finite number'),
    ({'label': 'A', 'score': 0.5, 'segment': [0, float('inf')]}, 'not finite'),
    ({'label': 'A', 'score': 0.5, 'segment': [float('nan'), 1]}, 'not finite'),
    ({'label': 'A', 'segment': [0, 1]}, 'score None'),
    ({'label': 'A', 'score': 0.5}, 'expected an object'),
    ({'label': 3, 'score': 0.5, 'segment': [0, 1]}, 'not a string'),
    ([0, 1], 'expected an object'),
])
def test_bad_prediction_entries(small_gt, tmp_path, entry, problem):
    doc = {'results': {'v1': [{'label': 'A', 'score': 0.1, 'segment': [0, 1]}],
                       'v2': [{'label': 'B', 'score': 0.1, 'segment': [0, 1]}, entry]}}
    path = write_json(tmp_path / 'pred.json', doc)
    with pytest.raises(UserError, match=re.escape(problem)) as info:
        eval_files.load_predictions(path, small_gt)
    assert f'{path}: video v2, prediction 1' in str(info.value)


def test_malformed_prediction_files(small_gt, tmp_path):
    with pytest.raises(UserError, match='cannot read'):
        eval_files.load_predictions(str(tmp_path / 'nope.json'), small_gt)
    with pytest.raises(UserError, match='no "results"'):
        eval_files.load_predictions({'result': {}}, small_gt)
    with pytest.raises(UserError, match='video v1: expected a list'):
        eval_files.load_predictions({'results': {'v1': {'label': 'A'}}}, small_gt)


def test_bad_threshold_arrays(small_gt):
    preds = eval_files.load_predictions({'results': {}}, small_gt)
    for bad in ([], [0.5, 1.5], [[0.5]], [float('nan')]):
        with pytest.raises(UserError, match='tIoU thresholds'):
            average_precision.evaluate_detection(small_gt, preds, bad)


# ---------------------------------------------------------------------------------------------
# Thresholds, files, reporting


def test_parse_tiou_thresholds():
    assert eval_files.parse_tiou_thresholds('0.1:0.7:0.1').tolist() == THUMOS_THRESHOLDS
    assert eval_files.parse_tiou_thresholds('0.5:0.95:0.05').tolist() == [
        0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    assert eval_files.parse_tiou_thresholds('0.5,0.75,0.95').tolist() == [0.5, 0.75, 0.95]
    assert eval_files.parse_tiou_thresholds(' 0.5 ').tolist() == [0.5]
    assert eval_files.parse_tiou_thresholds('0.3:0.3:0.1').tolist() == [0.3]
    assert eval_files.parse_tiou_thresholds('0:1:0.25').tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize('text', ['', '0.1:0.7', '0.1:0.7:0.1:1', 'a,b', '0.5,,0.7', '1.5',
                                  '-0.1', '0.7:0.1:0.1', '0.1:0.7:0', 'nan', '0:1:0.00001'])
def test_parse_tiou_thresholds_rejects(text):
    with pytest.raises(UserError, match='tIoU thresholds'):
        eval_files.parse_tiou_thresholds(text)
