"""Shared by the evaluation tests: literal ports of the official ActivityNet evaluation and of the
snippet-grid protocol of CO2-Net / DELU (the references), and builders of ground truth and
predictions. A test-support module: no tests here."""

import json
import os

import numpy as np

from wtal_jax.postprocess import average_precision, eval_files, snippet


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
