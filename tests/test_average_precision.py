"""Tests for wtal_jax.postprocess.average_precision: detection mAP against a literal port of the
official ActivityNet code, hand-computed cases, properties, and the video-level metrics."""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from wtal_jax.postprocess import average_precision, eval_files
from evaluation_cases import (THUMOS_THRESHOLDS, assert_same_as_reference, evaluate, gt_doc,
                              pred_doc, random_case, write_json)


# ---------------------------------------------------------------------------------------------
# Agreement with the official algorithm


def test_matches_reference_on_tie_heavy_random_cases(tmp_path):
    rng = np.random.default_rng(0)
    thresholds = np.array([0.0, 0.1, 0.3, 0.5, 0.7, 1.0])
    for _ in range(150):
        gt_json, pred_json = random_case(rng)
        result = evaluate(tmp_path, gt_json, pred_json, thresholds)
        assert_same_as_reference(result, gt_json, pred_json, thresholds)


def test_matches_reference_on_many_predictions_per_group(tmp_path):
    # Long greedy sequences inside one (class, video) group, many equal scores and tIoUs.
    rng = np.random.default_rng(1)
    for _ in range(5):
        gt_json, pred_json = random_case(rng, num_videos=2, classes=('A', 'B'), grid=30)
        for entries in pred_json['results'].values():
            for _ in range(60):
                s = int(rng.integers(0, 30))
                entries.append({'label': 'A', 'score': float(rng.choice([0.3, 0.6])),
                                'segment': [s, s + int(rng.integers(0, 5))]})
        result = evaluate(tmp_path, gt_json, pred_json, THUMOS_THRESHOLDS)
        assert_same_as_reference(result, gt_json, pred_json, THUMOS_THRESHOLDS)


def test_matches_reference_on_crowded_instances(tmp_path):
    # Many overlapping instances of one length and predictions on a half grid: a prediction often
    # has the same positive tIoU with two different instances, and which one the walk takes first
    # (NumPy's unstable argsort, reversed) changes later matches. A stable sort fails this test.
    rng = np.random.default_rng(3)
    thresholds = [0.1, 0.2, 0.3, 0.5]
    for _ in range(40):
        anns = [('A', s, s + 2) for s in rng.integers(0, 10, rng.integers(8, 25)).tolist()]
        entries = []
        for _ in range(30):
            start = float(rng.integers(0, 22)) / 2
            entries.append(('A', float(rng.choice([0.3, 0.6, 0.9])), start,
                            start + float(rng.choice([1, 2, 3]))))
        gt_json, pred_json = gt_doc({'v1': anns}), pred_doc({'v1': entries})
        result = evaluate(tmp_path, gt_json, pred_json, thresholds)
        assert_same_as_reference(result, gt_json, pred_json, thresholds)


def test_matches_reference_on_real_thumos14(thumos14_dir):
    path = os.path.join(thumos14_dir, 'gt.json')
    with open(path) as f:
        gt_json = json.load(f)
    gt = eval_files.load_ground_truth(path, 'test')
    rng = np.random.default_rng(2)
    results = {}
    for _ in range(3000):
        j = rng.integers(len(gt.label))
        start, end = gt.segments[j]
        length = max(end - start, 1.0)
        video, label = gt.video_names[gt.video[j]], gt.class_names[gt.label[j]]
        if rng.random() < 0.2:  # a wrong class in a video that may or may not have it
            label = gt.class_names[rng.integers(len(gt.class_names))]
        a, b = np.sort(np.round([start, end] + rng.normal(0, 0.3 * length, 2), 1))
        results.setdefault(video, []).append(
            {'label': label, 'score': float(rng.choice([0.25, 0.5, 0.75, 1.0])),
             'segment': [float(a), float(b)]})
    pred_json = {'results': results}
    # Threshold 0 admits instances at tIoU 0, which tie by the dozen in the long THUMOS videos.
    thresholds = [0.0] + THUMOS_THRESHOLDS
    result = average_precision.evaluate_detection(gt, eval_files.load_predictions(pred_json, gt), thresholds)
    assert_same_as_reference(result, gt_json, pred_json, thresholds)
    assert len(result.class_names) == 20


# ---------------------------------------------------------------------------------------------
# Hand-computed cases


def test_duplicate_of_a_matched_prediction_is_a_false_positive(tmp_path):
    gt_json = gt_doc({'v1': [('A', 0, 10), ('A', 20, 30)]})
    pred_json = pred_doc({'v1': [('A', 0.9, 0, 10), ('A', 0.8, 0, 10), ('A', 0.7, 20, 30)]})
    result = evaluate(tmp_path, gt_json, pred_json, [0.5])
    # TP, FP, TP: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1; envelope 1, 2/3, 2/3.
    assert result.ap[0, 0] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3, abs=1e-15)


def test_class_without_predictions_has_ap_zero_and_counts_in_the_mean(tmp_path):
    gt_json = gt_doc({'v1': [('A', 0, 10), ('B', 20, 30)]})
    pred_json = pred_doc({'v1': [('A', 0.9, 0, 10)]})
    result = evaluate(tmp_path, gt_json, pred_json, [0.5])
    assert result.class_names == ('A', 'B')
    assert result.ap.tolist() == [[1.0], [0.0]]
    assert result.map.tolist() == [0.5]
    assert result.average_map == 0.5


def test_predictions_without_ground_truth_in_their_video_are_false_positives(tmp_path):
    gt_json = gt_doc({'v1': [('A', 0, 10)], 'v2': [('B', 0, 10)], 'v3': []})
    gt_json['database']['t1'] = {'subset': 'train', 'annotations': [{'label': 'A',
                                                                     'segment': [0, 10]}]}
    pred_json = pred_doc({
        't1': [('A', 0.95, 0, 10)],   # outside the subset
        'v2': [('A', 0.9, 0, 10)],    # a video with ground truth, but not of class A
        'v3': [('A', 0.85, 0, 10)],   # a video without any annotation
        'v1': [('A', 0.8, 0, 10)]})
    gt = eval_files.load_ground_truth(write_json(tmp_path / 'gt.json', gt_json), 'test')
    assert gt.video_names == ('v1', 'v2', 'v3')
    preds = eval_files.load_predictions(pred_json, gt)
    assert preds.num_outside_subset == 1 and preds.outside_subset_videos == ('t1',)
    result = average_precision.evaluate_detection(gt, preds, [0.5])
    # FP, FP, FP, TP: the only recall step (0 -> 1) has envelope precision 1/4.
    assert result.ap[0, 0] == 0.25
    assert result.ap[1, 0] == 0.0  # class B: no predictions


def test_several_thresholds_at_once(tmp_path):
    gt_json = gt_doc({'v1': [('A', 0, 10), ('A', 20, 30)]})
    # tIoU 5/10 = 0.5 with the first instance, 8/10 = 0.8 with the second.
    pred_json = pred_doc({'v1': [('A', 0.9, 0, 5), ('A', 0.8, 20, 28)]})
    result = evaluate(tmp_path, gt_json, pred_json, [0.3, 0.5, 0.6, 0.9])
    # 0.3 and 0.5 (>= counts): TP, TP -> 1. 0.6: FP, TP -> recall 1/2 at precision 1/2 -> 0.25.
    assert result.ap[0].tolist() == [1.0, 1.0, 0.25, 0.0]
    assert result.map.tolist() == [1.0, 1.0, 0.25, 0.0]
    assert result.average_map == pytest.approx(2.25 / 4, abs=1e-15)


def test_zero_length_segments(tmp_path):
    gt_json = gt_doc({'v1': [('A', 0, 10)], 'v2': [('A', 4, 8)]})
    # Zero length inside an instance: inter 0, union 10 -> tIoU 0.
    # Positive length across nothing: [8, 9] vs [4, 8]: inter 0 -> tIoU 0.
    pred_json = pred_doc({'v1': [('A', 0.9, 5, 5)], 'v2': [('A', 0.8, 8, 9)]})
    result = evaluate(tmp_path, gt_json, pred_json, [0.0, 0.1])
    # At 0.0 every tIoU (0) qualifies: TP, TP. At 0.1: FP, FP.
    assert result.ap[0].tolist() == [1.0, 0.0]


def test_zero_length_prediction_on_zero_length_instance_is_tiou_zero_not_nan(tmp_path):
    # Union 0: the official code divides 0 by 0 and counts the NaN as a match at every threshold.
    gt_json = gt_doc({'v1': [('A', 5, 5), ('A', 0, 10)]})
    pred_json = pred_doc({'v1': [('A', 0.9, 5, 5), ('A', 0.8, 7, 7)]})
    tiou = average_precision.segment_iou(np.array([[5.0, 5.0]]), np.array([[[5.0, 5.0], [0.0, 10.0]]]))
    assert tiou.tolist() == [[0.0, 0.0]]
    result = evaluate(tmp_path, gt_json, pred_json, [0.0, 0.5])
    # 0.0: both match (one instance each) -> 1. 0.5: nothing matches -> 0.
    assert result.ap[0].tolist() == [1.0, 0.0]


def test_equal_tiou_instances_are_walked_in_reversed_argsort_order(tmp_path):
    # [2.5, 12.5] overlaps both instances by 7.5 of 12.5 (tIoU 0.6). The official walk takes
    # the first of np.argsort(tiou)[::-1]. If that is [5, 15], the later [0, 10] prediction still
    # finds [0, 10] (TP, TP); if it is [0, 10], the later one is left with tIoU 1/3 (TP, FP).
    gt_json = gt_doc({'v1': [('A', 0, 10), ('A', 5, 15)]})
    pred_json = pred_doc({'v1': [('A', 0.9, 2.5, 12.5), ('A', 0.8, 0, 10)]})
    result = evaluate(tmp_path, gt_json, pred_json, [0.5])
    takes_second = np.argsort(np.array([0.6, 0.6]))[::-1][0] == 1
    assert result.ap[0, 0] == (1.0 if takes_second else 0.5)


def test_a_duplicate_can_match_a_second_instance(tmp_path):
    # Why "a duplicate never raises AP" needs instances that no prediction can share: here the
    # duplicate takes the second instance (tIoU 0.5 with both) and AP goes from 0.5 to 1.
    gt_json = gt_doc({'v1': [('A', 0, 1), ('A', 1, 2)]})
    single = pred_doc({'v1': [('A', 0.9, 0, 2)]})
    double = pred_doc({'v1': [('A', 0.9, 0, 2), ('A', 0.9, 0, 2)]})
    assert evaluate(tmp_path, gt_json, single, [0.5]).ap[0, 0] == 0.5
    assert evaluate(tmp_path, gt_json, double, [0.5]).ap[0, 0] == 1.0


def test_empty_results_give_zero_ap(tmp_path):
    gt_json = gt_doc({'v1': [('A', 0, 10), ('B', 1, 2)]})
    for pred_json in ({'results': {}}, {'results': {'v1': []}}):
        result = evaluate(tmp_path, gt_json, pred_json, THUMOS_THRESHOLDS)
        assert result.ap.shape == (2, 7) and not result.ap.any()
        assert result.average_map == 0.0


def test_class_order_is_first_appearance_in_the_subset(tmp_path):
    gt_json = gt_doc({'v1': [('Z', 0, 1)], 'v2': [('B', 0, 1), ('Z', 2, 3), ('A', 4, 5)]})
    gt_json['database']['t'] = {'subset': 'train', 'annotations': [{'label': 'Q',
                                                                    'segment': [0, 1]}]}
    gt = eval_files.load_ground_truth(write_json(tmp_path / 'gt.json', gt_json), 'test')
    assert gt.class_names == ('Z', 'B', 'A')
    assert gt.label.tolist() == [0, 1, 0, 2]
    assert gt.video.tolist() == [0, 1, 1, 1]


# ---------------------------------------------------------------------------------------------
# Properties

_bounds = st.integers(0, 40)


@st.composite
def disjoint_instances(draw):
    """{video: [(label, start, end)]}: positive-length instances that never overlap in a video."""
    videos = {}
    for v in range(draw(st.integers(1, 4))):
        cuts = sorted(draw(st.sets(_bounds, min_size=2, max_size=10)))
        pairs = list(zip(cuts[::2], cuts[1::2]))
        videos[f'v{v}'] = [(draw(st.sampled_from('AB')), s, e) for s, e in pairs]
    return videos


@st.composite
def case_with_distinct_scores(draw):
    gt_videos = draw(disjoint_instances())
    labels = sorted({c for anns in gt_videos.values() for c, _, _ in anns})
    n = draw(st.integers(0, 25))
    scores = draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n, unique=True))
    pred_videos = {}
    for score in scores:
        v = draw(st.sampled_from(sorted(gt_videos) + ['elsewhere']))
        s, length = draw(_bounds), draw(st.integers(0, 8))
        pred_videos.setdefault(v, []).append((draw(st.sampled_from(labels)), score / 1e6, s,
                                              s + length))
    return gt_videos, pred_videos


def _evaluate_docs(gt_json, pred_json, thresholds):
    # Hypothesis reuses function-scoped fixtures across examples, so no tmp_path here.
    with tempfile.TemporaryDirectory() as folder:
        gt = eval_files.load_ground_truth(write_json(os.path.join(folder, 'gt.json'), gt_json), 'test')
    return average_precision.evaluate_detection(gt, eval_files.load_predictions(pred_json, gt), thresholds)


@settings(max_examples=60, deadline=None)
@given(case=case_with_distinct_scores(), data=st.data())
def test_invariant_to_video_order_in_the_results(case, data):
    gt_videos, pred_videos = case
    order = data.draw(st.permutations(sorted(pred_videos)))
    shuffled = {v: pred_videos[v] for v in order}
    thresholds = [0.1, 0.5, 0.7]
    a = _evaluate_docs(gt_doc(gt_videos), pred_doc(pred_videos), thresholds)
    b = _evaluate_docs(gt_doc(gt_videos), pred_doc(shuffled), thresholds)
    np.testing.assert_array_equal(a.ap, b.ap)
    np.testing.assert_array_equal(a.map, b.map)


@settings(max_examples=60, deadline=None)
@given(gt_videos=disjoint_instances(), data=st.data())
def test_perfect_predictions_give_ap_one(gt_videos, data):
    pred_videos = {v: [(c, data.draw(st.floats(0, 1)), s, e) for c, s, e in anns]
                   for v, anns in gt_videos.items()}
    result = _evaluate_docs(gt_doc(gt_videos), pred_doc(pred_videos), [0.1, 0.5, 0.95, 1.0])
    assert (result.ap == 1.0).all()


@settings(max_examples=60, deadline=None)
@given(case=case_with_distinct_scores(), data=st.data())
def test_adding_a_duplicate_never_raises_ap(case, data):
    # Instances in a video do not overlap and thresholds exceed 0.5, so a prediction qualifies
    # for at most one instance: its duplicate can only be a false positive.
    gt_videos, pred_videos = case
    entries = [(v, i) for v, es in pred_videos.items() for i in range(len(es))]
    if not entries:
        return
    v, i = data.draw(st.sampled_from(entries))
    more = {w: list(es) for w, es in pred_videos.items()}
    more[v].insert(data.draw(st.integers(0, len(more[v]))), pred_videos[v][i])
    thresholds = [0.51, 0.7, 0.9]
    before = _evaluate_docs(gt_doc(gt_videos), pred_doc(pred_videos), thresholds)
    after = _evaluate_docs(gt_doc(gt_videos), pred_doc(more), thresholds)
    assert (after.ap <= before.ap).all()


# ---------------------------------------------------------------------------------------------
# Video-level metrics


def test_video_accuracy():
    p_act = [[0.9, 0.1, 0.3],   # predicts {0, 2}; labels {0, 2}: correct
             [0.2, 0.19, 0.0],  # predicts {0} (0.2 >= 0.2); labels {0}: correct
             [0.5, 0.5, 0.5],   # predicts {0, 1, 2}; labels {1}: wrong
             [0.1, 0.1, 0.1]]   # predicts nothing; labels {2}: wrong
    labels = [[1, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert average_precision.video_accuracy(p_act, labels) == 0.5
    assert average_precision.video_accuracy(p_act, np.array(labels) / 2.0) == 0.5  # normalised labels
    # At 0.25 video 0 still predicts {0, 2}; video 1 predicts nothing: only video 0 is right.
    assert average_precision.video_accuracy(p_act, labels, threshold=0.25) == 0.25
    with pytest.raises(ValueError):
        average_precision.video_accuracy(p_act, labels[:3])


def test_classification_map():
    scores = np.array([[0.9, 0.1, 0.5],
                       [0.8, 0.4, 0.5],
                       [0.3, 0.7, 0.5],
                       [0.1, 0.2, 0.5]])
    labels = np.array([[1, 0, 0],
                       [0, 1, 0],
                       [1, 0, 0],
                       [0, 0, 0]])
    # Class 0, ranking 0, 1, 2, 3: positives at ranks 1 and 3 -> (1/1 + 2/3) / 2.
    # Class 1, ranking 2, 1, 3, 0: positive at rank 2 -> 1/2.
    # Class 2 has no positive video: left out.
    assert average_precision.classification_map(scores, labels) == pytest.approx(((1 + 2 / 3) / 2 + 0.5) / 2,
                                                                  abs=1e-15)
    # Ties: equal scores keep video order, so the positive video 1 ranks second -> AP 1/2.
    tied = np.full((3, 1), 0.5)
    assert average_precision.classification_map(tied, [[0], [1], [0]]) == 0.5
    with pytest.raises(ValueError, match='no class has a positive'):
        average_precision.classification_map(scores, np.zeros((4, 3)))


def test_evaluation_does_not_import_jax():
    code = ('import sys, wtal_jax.postprocess.eval_files, wtal_jax.postprocess.snippet, '
            'wtal_jax.postprocess.average_precision, wtal_jax.postprocess.tables; '
            'print("jax" in sys.modules)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'False'
