"""Tests for wtal_jax.postprocess (eval_files, snippet, average_precision, tables): detection mAP against a literal port of the official ActivityNet
code, hand-computed cases, properties, bad input, and the video-level metrics."""

import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from wtal_jax.postprocess import average_precision, eval_files, snippet, tables
from wtal_jax.errors import UserError

THUMOS_THRESHOLDS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]


# ---------------------------------------------------------------------------------------------
# Reference: ActivityNet's eval_detection.py, one prediction at a time, pandas replaced by lists.
# Only change: the 0/0 tIoU is 0 (SPEC §6), where the official code gives NaN.


def _reference_segment_iou(target_segment, candidate_segments):
    tt1 = np.maximum(target_segment[0], candidate_segments[:, 0])
    tt2 = np.minimum(target_segment[1], candidate_segments[:, 1])
    segments_intersection = (tt2 - tt1).clip(0)
    segments_union = ((candidate_segments[:, 1] - candidate_segments[:, 0])
                      + (target_segment[1] - target_segment[0]) - segments_intersection)
    safe_union = np.where(segments_union > 0, segments_union, 1.0)
    return np.where(segments_union > 0, segments_intersection.astype(float) / safe_union, 0.0)


def _reference_interpolated_prec_rec(prec, rec):
    mprec = np.hstack([[0], prec, [0]])
    mrec = np.hstack([[0], rec, [1]])
    for i in range(len(mprec) - 1)[::-1]:
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.where(mrec[1::] != mrec[0:-1])[0] + 1
    return np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx])


def _reference_class_ap(gt_rows, pred_rows, tiou_thresholds):
    """compute_average_precision_detection; rows are (video, start, end[, score]) in file order."""
    ap = np.zeros(len(tiou_thresholds))
    if not pred_rows:
        return ap
    npos = float(len(gt_rows))
    lock_gt = np.ones((len(tiou_thresholds), len(gt_rows))) * -1
    sort_idx = np.array([r[3] for r in pred_rows], dtype=np.float64).argsort()[::-1]
    prediction = [pred_rows[i] for i in sort_idx]
    tp = np.zeros((len(tiou_thresholds), len(prediction)))
    fp = np.zeros((len(tiou_thresholds), len(prediction)))
    ground_truth_gbvn = {}  # groupby('video-id'): original row indices, in order
    for i, row in enumerate(gt_rows):
        ground_truth_gbvn.setdefault(row[0], []).append(i)
    for idx, this_pred in enumerate(prediction):
        if this_pred[0] not in ground_truth_gbvn:
            fp[:, idx] = 1
            continue
        this_gt_index = ground_truth_gbvn[this_pred[0]]
        this_gt = np.array([gt_rows[i][1:3] for i in this_gt_index], dtype=np.float64)
        tiou_arr = _reference_segment_iou(np.array(this_pred[1:3]), this_gt)
        tiou_sorted_idx = tiou_arr.argsort()[::-1]
        for tidx, tiou_thr in enumerate(tiou_thresholds):
            for jdx in tiou_sorted_idx:
                if tiou_arr[jdx] < tiou_thr:
                    fp[tidx, idx] = 1
                    break
                if lock_gt[tidx, this_gt_index[jdx]] >= 0:
                    continue
                tp[tidx, idx] = 1
                lock_gt[tidx, this_gt_index[jdx]] = idx
                break
            if fp[tidx, idx] == 0 and tp[tidx, idx] == 0:
                fp[tidx, idx] = 1
    tp_cumsum = np.cumsum(tp, axis=1).astype(float)
    fp_cumsum = np.cumsum(fp, axis=1).astype(float)
    recall_cumsum = tp_cumsum / npos
    precision_cumsum = tp_cumsum / (tp_cumsum + fp_cumsum)
    for tidx in range(len(tiou_thresholds)):
        ap[tidx] = _reference_interpolated_prec_rec(precision_cumsum[tidx, :],
                                                    recall_cumsum[tidx, :])
    return ap


def reference_evaluate(gt_json, pred_json, subset, tiou_thresholds):
    """ANETdetection.evaluate: returns (class names, ap (K, C), mAP (K,), average mAP)."""
    activity_index, cidx = {}, 0
    gt_rows = []
    for videoid, v in gt_json['database'].items():
        if subset != v['subset']:
            continue
        for ann in v['annotations']:
            if ann['label'] not in activity_index:
                activity_index[ann['label']] = cidx
                cidx += 1
            gt_rows.append((videoid, float(ann['segment'][0]), float(ann['segment'][1]),
                            activity_index[ann['label']]))
    pred_rows = []
    for videoid, v in pred_json['results'].items():
        for result in v:
            pred_rows.append((videoid, float(result['segment'][0]), float(result['segment'][1]),
                              result['score'], activity_index[result['label']]))
    ap = np.zeros((len(tiou_thresholds), len(activity_index)))
    for label_name, cidx in activity_index.items():
        ap[:, cidx] = _reference_class_ap([r[:3] for r in gt_rows if r[3] == cidx],
                                          [r[:4] for r in pred_rows if r[4] == cidx],
                                          tiou_thresholds)
    mAP = ap.mean(axis=1)
    return tuple(activity_index), ap, mAP, mAP.mean()


# ---------------------------------------------------------------------------------------------
# Reference: the snippet-grid protocol of CO2-Net (MM 2021) and DELU (ECCV 2022), ported line by
# line from their ANETdetection._import_ground_truth (eval/eval_detection.py) and filter_segments
# (proposal_methods.py), pandas replaced by lists; the AP is their unchanged copy of the official
# compute_average_precision_detection, ported above (with the same 0/0 change).


def _reference_filter_segments(segment_predict, vn, ambilist):
    """filter_segments: rows [t_start, t_end, score, class] of video ``vn``, snippet units."""
    ind = np.zeros(np.shape(segment_predict)[0])
    for i in range(np.shape(segment_predict)[0]):
        for a in ambilist:
            if a[0] == vn:
                gt = range(int(round(float(a[2]) * 25 / 16)), int(round(float(a[3]) * 25 / 16)))
                pd = range(int(segment_predict[i][0]), int(segment_predict[i][1]))
                IoU = float(len(set(gt).intersection(set(pd)))) / float(
                    len(set(gt).union(set(pd))))
                if IoU > 0:
                    ind[i] = 1
    s = [segment_predict[i, :] for i in range(np.shape(segment_predict)[0]) if ind[i] == 0]
    return np.array(s)


def reference_snippet_evaluate(gt_json, proposals, ambiguous_path, subset, tiou_thresholds):
    """proposals: {video: [(label, score, t_start, t_end)]}, whole snippets, the end exclusive
    (last snippet + 1), as their proposal methods make them. Returns {class: ap (K,)}."""
    ambilist = list(open(ambiguous_path, 'r'))
    ambilist = [a.strip('\n').split(' ') for a in ambilist]
    gt_rows = []  # (video, t-start, t-end, label); videos without annotations are left out
    for videoid, v in gt_json['database'].items():
        if v['subset'] != subset or len(v['annotations']) == 0:
            continue
        for ann in v['annotations']:
            gt_rows.append((videoid, round(float(ann['segment'][0]) * 25 / 16),
                            round(float(ann['segment'][1]) * 25 / 16), ann['label']))
    classlist = sorted({r[3] for r in gt_rows})
    pred_rows = []  # pd.concat of every video's filtered proposals, in video order
    for vn, props in proposals.items():
        segment_predict = np.array([[s, e, score, classlist.index(c)] for c, score, s, e in props])
        segment_predict = _reference_filter_segments(segment_predict, vn, ambilist)
        for i in range(np.shape(segment_predict)[0]):
            pred_rows.append((vn, segment_predict[i, 0], segment_predict[i, 1],
                              segment_predict[i, 2], int(segment_predict[i, 3])))
    return {c: _reference_class_ap([r[:3] for r in gt_rows if r[3] == c],
                                   [r[:4] for r in pred_rows if r[4] == cidx], tiou_thresholds)
            for cidx, c in enumerate(classlist)}


# ---------------------------------------------------------------------------------------------
# Helpers


def write_json(path, obj):
    with open(path, 'w') as f:
        json.dump(obj, f)
    return str(path)


def gt_doc(videos, subset='test'):
    """{video: [(label, start, end), ...]} -> ActivityNet ground-truth document."""
    return {'database': {v: {'subset': subset, 'annotations': [
        {'label': c, 'segment': [s, e]} for c, s, e in anns]} for v, anns in videos.items()}}


def pred_doc(videos):
    """{video: [(label, score, start, end), ...]} -> ActivityNet results document."""
    return {'results': {v: [{'label': c, 'score': p, 'segment': [s, e]} for c, p, s, e in entries]
                        for v, entries in videos.items()}}


def evaluate(tmp_path, gt_json, pred_json, thresholds, subset='test'):
    gt = eval_files.load_ground_truth(write_json(tmp_path / 'gt.json', gt_json), subset)
    return average_precision.evaluate_detection(gt, eval_files.load_predictions(pred_json, gt), thresholds)


def assert_same_as_reference(result, gt_json, pred_json, thresholds, subset='test'):
    names, ap, mAP, average = reference_evaluate(gt_json, pred_json, subset, thresholds)
    assert result.class_names == names
    np.testing.assert_array_equal(result.ap, ap.T)  # exact, not approximate
    np.testing.assert_array_equal(result.map, mAP)
    assert result.average_map == average


def random_case(rng, num_videos=6, classes=('A', 'B', 'C'), grid=12, max_instances=8):
    """Tie-heavy ground truth and predictions: bounds on a coarse grid (identical and zero-length
    segments), scores from three values, videos without ground truth and outside the subset.
    NumPy's argsort breaks ties like a stable sort on rows shorter than 5 or so, so groups of
    up to ``max_instances`` instances make the tie order of ground truths matter."""
    gt_videos = {}
    for v in range(num_videos):
        anns = []
        for c in classes:
            for _ in range(rng.integers(0, max_instances) if rng.random() < 0.7 else 0):
                s = int(rng.integers(0, grid))
                anns.append((c, s, s + int(rng.integers(0, 4))))
        gt_videos[f'v{v}'] = anns
    gt_videos['v0'].append((classes[0], 1, 3))  # every class label must occur at least once
    gt_json = gt_doc(gt_videos)
    gt_json['database']['train0'] = {'subset': 'train', 'annotations': [
        {'label': 'A', 'segment': [0, 5]}]}
    names = {c for anns in gt_videos.values() for c, _, _ in anns}
    pred_videos = {}
    for v in list(rng.permutation([f'v{v}' for v in range(num_videos)])) + ['train0']:
        entries = []
        for _ in range(rng.integers(0, 12)):
            c = sorted(names)[rng.integers(len(names))]
            s = int(rng.integers(0, grid))
            entries.append((c, float(rng.choice([0.2, 0.5, 0.9])), s, s + int(rng.integers(0, 4))))
        pred_videos[str(v)] = entries
    return gt_json, pred_doc(pred_videos)


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


def test_evaluate_files_json_and_table(tmp_path):
    gt_path = write_json(tmp_path / 'gt.json', gt_doc({'v1': [('A', 0, 10), ('B', 20, 30)]}))
    # A: tIoU 0.5 -> matched up to 0.5. B: tIoU 0.8 -> matched up to 0.8.
    pred_path = write_json(tmp_path / 'p.json', pred_doc({'v1': [('A', 0.9, 0, 5),
                                                                 ('B', 0.8, 20, 28)]}))
    result = average_precision.evaluate_files(gt_path, pred_path, 'test', '0.1:0.7:0.1')
    assert result.map.tolist() == [1, 1, 1, 1, 1, 0.5, 0.5]
    out = average_precision.result_to_json(result)
    assert out == {'tiou_thresholds': THUMOS_THRESHOLDS, 'mAP': [1, 1, 1, 1, 1, 0.5, 0.5],
                   'average_mAP': result.average_map,
                   'ap': {'A': [1, 1, 1, 1, 1, 0, 0], 'B': [1] * 7}}
    assert result.average_map == pytest.approx(6 / 7, abs=1e-15)
    json.dumps(out, allow_nan=False)
    assert tables.format_table(result).splitlines() == [
        'mAP@tIoU |   0.1   0.2   0.3   0.4   0.5  0.6  0.7 |  AVG',
        'mAP (%)  | 100.0 100.0 100.0 100.0 100.0 50.0 50.0 | 85.7']


# ---------------------------------------------------------------------------------------------
# The snippet-grid protocol (W-TALC / CO2-Net / DELU)


def write_ambiguous(path, rows):
    """An ambiguous-segment list in the layout of THUMOS'14's file: two spaces after the id."""
    with open(path, 'w') as f:
        f.writelines(f'{video}  {start} {end}\n' for video, start, end in rows)
    return str(path)


def evaluate_snippets(gt_path, proposals, ambiguous_path, thresholds, subset='test'):
    """Our snippet protocol on whole-snippet proposals written in seconds (index * 16 / 25),
    as wtal_jax's localisation writes them."""
    gt = eval_files.load_ground_truth(gt_path, subset)
    preds = eval_files.load_predictions({'results': {v: [
        {'label': c, 'score': p, 'segment': [s * 16 / 25, e * 16 / 25]} for c, p, s, e in props]
        for v, props in proposals.items()}}, gt)
    ambiguous = snippet.load_ambiguous(ambiguous_path) if ambiguous_path else None
    return average_precision.evaluate_detection(*snippet.snippet_protocol(gt, preds, ambiguous), thresholds)


def assert_same_as_snippet_reference(result, gt_json, proposals, ambiguous_path, thresholds):
    expected = reference_snippet_evaluate(gt_json, proposals, ambiguous_path, 'test', thresholds)
    assert sorted(result.class_names) == list(expected)
    for name, row in zip(result.class_names, result.ap):
        np.testing.assert_array_equal(row, expected[name], err_msg=name)  # exact
    # The reference averages its classes in sorted order, this code in first-appearance order
    # (the official one): the same numbers, summed in another order.
    np.testing.assert_allclose(result.map, np.mean(list(expected.values()), axis=0),
                               rtol=0, atol=1e-15)


def random_snippet_case(rng, folder, num_videos=5, classes=('A', 'B', 'C')):
    """Ground truth in seconds at 0.1 s resolution (bounds land near and on half snippets),
    whole-snippet proposals with tied scores, and ambiguous segments over some of them."""
    gt_videos, proposals, ambiguous = {}, {}, []
    for v in range(num_videos):
        name = f'v{v}'
        anns = []
        for _ in range(int(rng.integers(0, 6))):
            start = int(rng.integers(0, 400)) / 10
            anns.append((str(classes[rng.integers(len(classes))]), start,
                         start + int(rng.integers(0, 60)) / 10))
        gt_videos[name] = anns
        props = []
        for _ in range(int(rng.integers(0, 15))):
            s = int(rng.integers(0, 60))
            props.append((str(classes[rng.integers(len(classes))]),
                          float(rng.choice([0.2, 0.5, 0.9])), s, s + int(rng.integers(1, 12))))
        proposals[name] = props
        for _ in range(int(rng.integers(0, 3))):
            start = int(rng.integers(0, 400)) / 10
            ambiguous.append((name, start, start + int(rng.integers(0, 50)) / 10))
    gt_videos['v0'].append(('A', 1.0, 3.0))  # every class occurs at least once
    gt_videos['v0'].append(('B', 5.0, 7.0))
    gt_videos['v0'].append(('C', 9.0, 11.0))
    proposals['elsewhere'] = [('A', 0.9, 1, 5)]  # a video outside the subset
    gt_json = gt_doc(gt_videos)
    gt_json['database']['elsewhere'] = {'subset': 'train', 'annotations': [
        {'label': 'A', 'segment': [0, 5]}]}
    return (write_json(os.path.join(folder, 'gt.json'), gt_json), gt_json, proposals,
            write_ambiguous(os.path.join(folder, 'ambiguous.txt'), ambiguous))


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
