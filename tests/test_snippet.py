"""Tests for wtal_jax.postprocess.snippet: the snippet-grid protocol against a port of the
CO2-Net / DELU code, by hand, and the ambiguous list."""

import json
import os
import re

import numpy as np
import pytest

from wtal_jax.errors import UserError
from wtal_jax.postprocess import average_precision, eval_files, snippet
from evaluation_cases import (assert_same_as_snippet_reference, evaluate_snippets, gt_doc,
                              pred_doc, random_snippet_case, write_ambiguous, write_json)


def test_snippet_protocol_matches_the_reference_on_random_cases(tmp_path):
    rng = np.random.default_rng(5)
    thresholds = [0.1, 0.3, 0.5, 0.7, 0.9]
    for _ in range(60):
        gt_path, gt_json, proposals, ambiguous_path = random_snippet_case(rng, tmp_path)
        result = evaluate_snippets(gt_path, proposals, ambiguous_path, thresholds)
        assert_same_as_snippet_reference(result, gt_json, proposals, ambiguous_path, thresholds)


def test_snippet_protocol_matches_the_reference_on_real_thumos14(thumos14_dir):
    gt_path = os.path.join(thumos14_dir, 'gt.json')
    ambiguous_path = os.path.join(thumos14_dir, 'ambiguous_test.txt')
    with open(gt_path) as f:
        gt_json = json.load(f)
    with open(ambiguous_path) as f:
        ambiguous_rows = [line.split() for line in f if line.strip()]
    test_videos = [v for v, e in gt_json['database'].items() if e['subset'] == 'test']
    rng = np.random.default_rng(6)
    proposals = {}
    for _ in range(3000):  # around instances, and a third around ambiguous segments
        if rng.random() < 1 / 3:
            video, a, b = ambiguous_rows[rng.integers(len(ambiguous_rows))]
            label = gt_json['database'].get(video, {'annotations': [{'label': 'HighJump'}]})[
                'annotations'][0]['label']
            a, b = float(a), float(b)
        else:
            video = test_videos[rng.integers(len(test_videos))]
            anns = gt_json['database'][video]['annotations']
            ann = anns[rng.integers(len(anns))]
            label, (a, b) = ann['label'], map(float, ann['segment'])
        s = max(0, round(a * 25 / 16) + int(rng.integers(-3, 4)))
        e = max(s + 1, round(b * 25 / 16) + int(rng.integers(-3, 4)))
        proposals.setdefault(video, []).append(
            (label, float(rng.choice([0.25, 0.5, 0.75, 1.0])), s, e))
    thresholds = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    result = evaluate_snippets(gt_path, proposals, ambiguous_path, thresholds)
    assert_same_as_snippet_reference(result, gt_json, proposals, ambiguous_path, thresholds)
    assert len(result.class_names) == 20


def test_snippet_grid_by_hand(tmp_path):
    # [1.0, 2.0] s -> 1.5625, 3.125 -> [2, 3]; 0.32 s -> 0.5 -> 0 and 0.96 s -> 1.5 -> 2 (half to
    # even, as Python's round); a prediction [0.64, 1.92] s -> [1, 3]: tIoU 1/2 on the grid,
    # (1.92 - 1) / (2 - 0.64) = 0.68 in seconds.
    gt_path = write_json(tmp_path / 'gt.json', gt_doc({'v1': [('A', 1.0, 2.0), ('A', 0.32, 0.96)]}))
    gt = eval_files.load_ground_truth(gt_path, 'test')
    preds = eval_files.load_predictions(pred_doc({'v1': [('A', 0.9, 0.64, 1.92)]}), gt)
    grid_gt, grid_preds = snippet.snippet_protocol(gt, preds)
    assert grid_gt.segments.tolist() == [[2, 3], [0, 2]]
    assert [round(0.32 * 25 / 16), round(0.96 * 25 / 16)] == [0, 2]
    assert grid_preds.segments.tolist() == [[1, 3]]
    assert average_precision.evaluate_detection(gt, preds, [0.6]).ap[0, 0] == 0.5  # seconds: matched
    assert average_precision.evaluate_detection(grid_gt, grid_preds, [0.6]).ap[0, 0] == 0.0  # grid: not
    assert average_precision.evaluate_detection(grid_gt, grid_preds, [0.5]).ap[0, 0] == 0.5


def test_ambiguous_overlap_by_hand(tmp_path):
    # Ambiguous [3.2, 4.8] s -> snippets [5, 7.5 -> 8). Touching at 5 keeps a prediction; sharing
    # snippet 5 drops it, whatever its class; other videos are untouched.
    gt = eval_files.load_ground_truth(write_json(tmp_path / 'gt.json', gt_doc({
        'v1': [('A', 0, 10)], 'v2': [('B', 0, 10)]})), 'test')
    preds = eval_files.load_predictions(pred_doc({
        'v1': [('A', 0.9, 1.92, 3.2),    # [3, 5): touches
               ('B', 0.8, 1.92, 3.52),   # [3, 5.5 -> 6): shares snippet 5
               ('A', 0.7, 4.48, 4.48),   # [7, 7): empty, shares nothing
               ('A', 0.6, 4.8, 6.4)],    # [8, 10): after
        'v2': [('B', 0.5, 3.2, 4.8)]}), gt)
    ambiguous = snippet.load_ambiguous(write_ambiguous(tmp_path / 'amb.txt', [('v1', 3.2, 4.8)]))
    _, kept = snippet.snippet_protocol(gt, preds, ambiguous)
    assert kept.score.tolist() == [0.9, 0.7, 0.6, 0.5]
    assert kept.segments.tolist() == [[3, 5], [7, 7], [8, 10], [5, 8]]
    assert kept.label.tolist() == [0, 0, 0, 1] and kept.video.tolist() == [0, 0, 0, 1]


def test_snippet_protocol_keeps_outside_subset_bookkeeping(tmp_path):
    gt = eval_files.load_ground_truth(write_json(tmp_path / 'gt.json', gt_doc({'v1': [('A', 0, 10)]})),
                              'test')
    preds = eval_files.load_predictions(pred_doc({'t1': [('A', 0.9, 0, 1), ('A', 0.8, 5, 6)],
                                          't2': [('A', 0.7, 5, 6)]}), gt)
    ambiguous = snippet.load_ambiguous(write_ambiguous(tmp_path / 'amb.txt',
                                                  [('t1', 4.9, 6), ('t2', 0, 9)]))
    _, kept = snippet.snippet_protocol(gt, preds, ambiguous)
    assert kept.num_outside_subset == 1 and kept.outside_subset_videos == ('t1',)
    assert preds.num_outside_subset == 3  # the input is unchanged


def test_load_ambiguous_real_file(thumos14_dir):
    path = os.path.join(thumos14_dir, 'ambiguous_test.txt')
    with open(path) as f:
        rows = [line.split() for line in f if line.strip()]
    ambiguous = snippet.load_ambiguous(path)
    assert list(ambiguous) == list(dict.fromkeys(r[0] for r in rows))
    assert sum(len(a) for a in ambiguous.values()) == len(rows)
    first = rows[0]
    assert ambiguous[first[0]][0].tolist() == [float(first[1]), float(first[2])]


@pytest.mark.parametrize('text, problem', [
    ('v1 0.0\n', 'expected VIDEO START END, got 2 fields'),
    ('v1 0 1\nv2 0 1 2\n', 'line 2: expected VIDEO START END, got 4 fields'),
    ('\nv1 abc 1\n', "line 2: segment bound 'abc' is not a number"),
    ('v1 3 1\n', 'line 1: segment [3.0, 1.0] ends before it starts'),
    ('v1 nan 1\n', 'not finite'),
])
def test_load_ambiguous_bad_lines(tmp_path, text, problem):
    path = tmp_path / 'amb.txt'
    path.write_text(text)
    with pytest.raises(UserError, match=re.escape(problem)) as info:
        snippet.load_ambiguous(str(path))
    assert str(path) in str(info.value) and '\n' not in str(info.value)
    with pytest.raises(UserError, match='cannot read'):
        snippet.load_ambiguous(str(tmp_path / 'nope.txt'))
