"""Average precision: detection mAP at temporal IoU, identical to the official ActivityNet
evaluation, and the video-level metrics (accuracy, classification mAP).

Plain NumPy (no JAX). The detection mAP reproduces ActivityNet's ``eval_detection.py``
(``compute_average_precision_detection``, ``interpolated_prec_rec``, ``segment_iou``) number for
number, ties included, with two holes closed on purpose (SPEC §6): a 0/0 tIoU is 0, not NaN, and
input that the official code would crash on or silently miscount is rejected by
``eval_files``. ``evaluate_detection`` ranks, matches and integrates without a Python loop per
prediction.
"""

import dataclasses
from typing import Any

import numpy as np

from wtal_jax.postprocess.eval_files import (GroundTruth, Predictions, _frozen,
                                             check_thresholds, load_ground_truth,
                                             load_predictions, parse_tiou_thresholds)

@dataclasses.dataclass(frozen=True, eq=False)
class DetectionResult:
    """Average precision per class and threshold, and its means.

    Attributes:
      tiou_thresholds: float64 (K,).
      class_names: (C,) as in the ground truth.
      ap: float64 (C, K) average precision, fractions in [0, 1].
      map: float64 (K,) mean of ``ap`` over classes.
      average_map: mean of ``map`` over thresholds.
    """
    tiou_thresholds: np.ndarray
    class_names: tuple[str, ...]
    ap: np.ndarray
    map: np.ndarray
    average_map: float


def segment_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Temporal IoU of each prediction with each of its ground truths, as the official code.

    Args:
      pred: float64 (n, 2) one segment per row.
      gt: float64 (n, G, 2) the ground truths each row is compared with.
    Returns:
      float64 (n, G): ``inter / union`` with ``inter = max(0, min(e) - max(s))`` and
      ``union = (e_gt - s_gt) + (e_pred - s_pred) - inter`` in that order (the same rounding);
      0 where the union is 0 (two zero-length segments), where the official code gives NaN and
      counts a true positive.
    """
    start = np.maximum(pred[:, None, 0], gt[..., 0])
    end = np.minimum(pred[:, None, 1], gt[..., 1])
    inter = (end - start).clip(0)
    union = (gt[..., 1] - gt[..., 0]) + (pred[:, None, 1] - pred[:, None, 0]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _rank_by_class(label: np.ndarray, score: np.ndarray, num_classes: int):
    """Ranks predictions per class by descending score, ties as the official code breaks them.

    Returns:
      ranked: int64 (P,) prediction indices, class 0's ranked predictions first, then class 1's...
      class_start: int64 (C + 1,) where each class's block starts in ``ranked``.
    """
    by_class = np.argsort(label, kind='stable')  # file order within each class
    class_start = np.concatenate([[0], np.cumsum(np.bincount(label, minlength=num_classes))])
    ranked = np.empty_like(by_class)
    for c in range(num_classes):
        block = by_class[class_start[c]:class_start[c + 1]]
        # The official code sorts exactly this array (the class's scores in file order) with the
        # default, unstable argsort; any other array or sort kind breaks ties differently.
        ranked[class_start[c]:class_start[c + 1]] = block[np.argsort(score[block])[::-1]]
    return ranked, class_start


def _candidates(seg: np.ndarray, group: np.ndarray, group_start: np.ndarray,
                group_size: np.ndarray, gt_segments: np.ndarray, min_threshold: float):
    """The ground truths each prediction may match, in the order the official code walks them.

    Args:
      seg: float64 (n, 2) predicted segments; group: int64 (n,) their (class, video) group.
      group_start, group_size: int64 (num_groups,) each group's slice of ``gt_segments``.
      gt_segments: float64 (N, 2) ground truth sorted by group, file order within a group.
      min_threshold: the smallest tIoU threshold; instances below it can never match.
    Returns:
      rows: int64 (m,) which of the n predictions have at least one candidate;
      gt_id: int64 (m, L) candidate instance (row of ``gt_segments``), N where padded;
      tiou: float64 (m, L) their tIoU, non-increasing along a row, -inf where padded.
    """
    rows, gt_ids, tious = [], [], []
    # The official code ranks a prediction's ground truths with argsort on a row of exactly the
    # group's length, so rows are sorted in batches of equal length: a padded row could break
    # ties differently. (argsort along an axis sorts each row as argsort of that row alone.)
    for size in np.unique(group_size[group]):
        sel = np.flatnonzero(group_size[group] == size)
        gt_id = group_start[group[sel], None] + np.arange(size)
        tiou = segment_iou(seg[sel], gt_segments[gt_id])
        order = np.argsort(tiou, axis=1)[:, ::-1]
        tiou = np.take_along_axis(tiou, order, axis=1)
        # Sorted in descending order, the instances at or above a threshold form a prefix.
        num_eligible = np.count_nonzero(tiou >= min_threshold, axis=1)
        keep = num_eligible > 0
        width = int(num_eligible.max(initial=0))
        rows.append(sel[keep])
        gt_ids.append(np.take_along_axis(gt_id, order[:, :width], axis=1)[keep])
        tious.append(tiou[keep, :width])
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.int64), np.zeros((0, 0))
    width = max(t.shape[1] for t in tious)

    def padded(blocks, value):
        return np.concatenate([np.pad(b, ((0, 0), (0, width - b.shape[1])), constant_values=value)
                               for b in blocks])
    return np.concatenate(rows), padded(gt_ids, len(gt_segments)), padded(tious, -np.inf)


def _match(gt: GroundTruth, preds: Predictions, ranked: np.ndarray,
           thresholds: np.ndarray) -> np.ndarray:
    """Greedy matching of the official code, at every threshold; True where a true positive.

    For each prediction in rank order and each threshold independently: walk its video's
    instances of its class in descending tIoU; the first below the threshold makes it a false
    positive, an instance already matched at this threshold is skipped, otherwise it is matched.

    Matching is sequential only among the predictions of one (class, video) group, which compete
    for the same instances. So step r handles the r-th prediction of every group at once, as
    arrays over groups x thresholds x candidates.

    Returns:
      bool (K, P), column i for prediction ``ranked[i]``.
    """
    num_thresholds, num_videos = len(thresholds), len(gt.video_names)
    true_pos = np.zeros((num_thresholds, len(ranked)), dtype=bool)
    gt_key = gt.label * num_videos + gt.video
    gt_order = np.argsort(gt_key, kind='stable')  # groups, file order within each
    keys, group_start, group_size = np.unique(
        gt_key[gt_order], return_index=True, return_counts=True)
    if not len(keys):
        return true_pos
    label, video = preds.label[ranked], preds.gt_video[ranked]
    key = label * num_videos + video
    group = np.searchsorted(keys, key).clip(max=len(keys) - 1)
    # Videos outside the subset (-1) have no ground truth; their key must not alias another.
    has_gt = (video >= 0) & (keys[group] == key)
    pos = np.flatnonzero(has_gt)  # positions in rank order, of predictions that may match
    rows, gt_id, tiou = _candidates(preds.segments[ranked[pos]], group[pos], group_start,
                                    group_size, gt.segments[gt_order], thresholds.min())
    pos, group = pos[rows], group[pos[rows]]
    if not len(pos):
        return true_pos

    # Rank of each prediction within its group (pos increases with rank inside a class), then
    # reorder step-major: step r is the contiguous block of every group's r-th prediction.
    by_group = np.lexsort((pos, group))
    first = np.flatnonzero(np.r_[True, group[by_group][1:] != group[by_group][:-1]])
    step = np.empty(len(pos), np.int64)
    step[by_group] = np.arange(len(pos)) - np.repeat(first, np.diff(np.r_[first, len(pos)]))
    step_major = np.argsort(step, kind='stable')
    pos, gt_id, tiou = pos[step_major], gt_id[step_major], tiou[step_major]

    # Column len(gt) is the padding instance: never eligible, since its tIoU is -inf.
    locked = np.zeros((num_thresholds, len(gt.label) + 1), dtype=bool)
    all_k = np.arange(num_thresholds)[:, None]
    begin = 0
    for count in np.bincount(step):
        block = slice(begin, begin + count)
        begin += count
        ids = gt_id[block]  # (A, L), instances of distinct groups: no two rows share one
        eligible = (tiou[None, block] >= thresholds[:, None, None]) & ~locked[:, ids]  # (K, A, L)
        first_eligible = eligible.argmax(axis=2)  # walk order: the first eligible one is matched
        hit = eligible.any(axis=2)  # (K, A)
        locked[all_k, ids[np.arange(count), first_eligible]] |= hit
        true_pos[:, pos[block]] = hit
    return true_pos


def interpolated_average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """All-point interpolated AP (VOC 2011), the official ``interpolated_prec_rec``.

    Args:
      precision, recall: float64 (n,) at each rank.
    Returns:
      sum over recall steps of (step width) x (precision envelope), where the envelope is the
      running maximum of precision from the right, after prepending 0 to both, appending 0 to
      precision and 1 to recall.
    """
    envelope = np.concatenate([[0.0], precision, [0.0]])
    envelope = np.maximum.accumulate(envelope[::-1])[::-1]
    recall = np.concatenate([[0.0], recall, [1.0]])
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    # np.sum over exactly these terms: the same pairwise summation, the same last digit.
    return float(np.sum((recall[steps] - recall[steps - 1]) * envelope[steps]))


def average_precision_detection(true_pos: np.ndarray, num_positives: int) -> np.ndarray:
    """AP of one class at each threshold, from its predictions' outcomes in rank order.

    Args:
      true_pos: bool (K, n), True where the r-th ranked prediction is a true positive at
        threshold k (every other prediction is a false positive).
      num_positives: the class's number of ground-truth instances (> 0).
    Returns:
      float64 (K,): precision = tp / (tp + fp) and recall = tp / num_positives from cumulative
      sums, integrated by ``interpolated_average_precision``; 0 where there are no predictions.
    """
    if true_pos.shape[1] == 0:
        return np.zeros(true_pos.shape[0])
    tp = np.cumsum(true_pos, axis=1, dtype=np.float64)
    fp = np.cumsum(~true_pos, axis=1, dtype=np.float64)
    recall = tp / float(num_positives)
    precision = tp / (tp + fp)
    return np.array([interpolated_average_precision(p, r) for p, r in zip(precision, recall)])


def evaluate_detection(gt: GroundTruth, preds: Predictions,
                       tiou_thresholds: Any) -> DetectionResult:
    """Detection AP per class and tIoU threshold, identical to ActivityNet's ``eval_detection.py``.

    Classes are ``gt.class_names``; a class without predictions has AP 0 and counts in the mean.
    See SPEC §6 for the rules, ties included.

    Args:
      gt: from ``load_ground_truth``; preds: from ``load_predictions`` with the same ``gt``.
      tiou_thresholds: (K,) values in [0, 1].
    """
    thresholds = check_thresholds(tiou_thresholds)
    num_classes = len(gt.class_names)
    ranked, class_start = _rank_by_class(preds.label, preds.score, num_classes)
    true_pos = _match(gt, preds, ranked, thresholds)
    num_positives = np.bincount(gt.label, minlength=num_classes)
    ap = np.zeros((len(thresholds), num_classes))
    for c in range(num_classes):
        ap[:, c] = average_precision_detection(
            true_pos[:, class_start[c]:class_start[c + 1]], num_positives[c])
    # The official code averages this (K, C) array along its contiguous last axis; averaging
    # the transposed layout can sum in another order and change the last digit.
    map_ = ap.mean(axis=1)
    return DetectionResult(
        tiou_thresholds=_frozen(thresholds.copy()),
        class_names=gt.class_names,
        ap=_frozen(np.ascontiguousarray(ap.T)),
        map=_frozen(map_),
        average_map=float(map_.mean()),
    )


def evaluate_files(gt_path: str, pred_path: str, subset: str,
                   tiou_thresholds: Any) -> DetectionResult:
    """Loads both files and evaluates; thresholds as an array or as text for
    ``parse_tiou_thresholds``."""
    if isinstance(tiou_thresholds, str):
        tiou_thresholds = parse_tiou_thresholds(tiou_thresholds)
    gt = load_ground_truth(gt_path, subset)
    return evaluate_detection(gt, load_predictions(pred_path, gt), tiou_thresholds)


def result_to_json(result: DetectionResult) -> dict:
    """The result as JSON-ready values, fractions (not percent):
    ``{"tiou_thresholds", "mAP", "average_mAP", "ap": {class: [per threshold]}}``."""
    return {
        'tiou_thresholds': result.tiou_thresholds.tolist(),
        'mAP': result.map.tolist(),
        'average_mAP': float(result.average_map),
        'ap': {c: row.tolist() for c, row in zip(result.class_names, result.ap)},
    }


# ---------------------------------------------------------------------------------------------
# Video-level metrics


def _video_arrays(scores: Any, labels: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Checks (V, C) scores against (V, C) labels; returns float64 scores and bool positives."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 2 or scores.shape != labels.shape or scores.shape[0] == 0:
        raise ValueError(f'{what}: need (V, C) scores and labels with V > 0, got '
                         f'{scores.shape} and {labels.shape}')
    if not np.isfinite(scores).all():
        raise ValueError(f'{what}: non-finite scores')
    return scores, labels > 0


def video_accuracy(p_act: Any, labels: Any, threshold: float = 0.2) -> float:
    """Fraction of videos whose predicted class set is exactly their label set (SPEC §5).

    Args:
      p_act: (V, C) video-level class scores.
      labels: (V, C) multi-hot; any positive entry marks the class present, so normalised
        labels work too.
      threshold: a class is predicted when ``p_act >= threshold``.
    """
    p_act, positive = _video_arrays(p_act, labels, 'video_accuracy')
    correct = np.all((p_act >= threshold) == positive, axis=1)
    return float(np.mean(correct))


def classification_map(scores: Any, labels: Any) -> float:
    """Mean over classes of the non-interpolated average precision of ranking videos by score.

    For class c with n_c >= 1 positive videos, ranked by descending score (ties: earlier video
    first, ``np.argsort(-scores, kind='stable')``):
    ``AP_c = (1 / n_c) * sum over positives at rank i (1-based) of (positives in ranks 1..i) / i``.
    Classes without a positive video are left out of the mean.

    Args:
      scores: (V, C) video-level class scores. labels: (V, C), positive entries mark a class.
    """
    scores, positive = _video_arrays(scores, labels, 'classification_map')
    order = np.argsort(-scores, axis=0, kind='stable')
    relevant = np.take_along_axis(positive, order, axis=0)  # (V, C) in ranked order
    precision = np.cumsum(relevant, axis=0) / np.arange(1, len(scores) + 1)[:, None]
    num_positive = relevant.sum(axis=0)
    present = num_positive > 0
    if not present.any():
        raise ValueError('classification_map: no class has a positive video')
    ap = (precision * relevant).sum(axis=0)[present] / num_positive[present]
    return float(np.mean(ap))
