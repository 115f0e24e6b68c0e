"""Detection mAP at temporal IoU, identical to the official ActivityNet evaluation, and the
video-level metrics (accuracy, classification mAP).

Plain NumPy (no JAX). The detection mAP reproduces ActivityNet's ``eval_detection.py``
(``compute_average_precision_detection``, ``interpolated_prec_rec``, ``segment_iou``) number for
number, ties included, with two holes closed on purpose (SPEC §6): a 0/0 tIoU is 0, not NaN, and
input that the official code would crash on or silently miscount is rejected with a ``UserError``.

Data flow: ``load_ground_truth`` (on the one annotation reader, ``data.annotations``) and
``load_predictions`` validate and flatten the JSON once; ``evaluate_detection`` ranks, matches and
integrates without a Python loop per prediction. ``snippet_protocol`` first maps both onto the
16-frame snippet grid of the W-TALC / CO2-Net / DELU codebases and drops the predictions that
overlap ambiguous segments; ``postprocess.report`` gathers every figure papers quote.
"""

import dataclasses
import itertools
import math
import numbers
from typing import Any, Mapping, Sequence

import numpy as np

from wtal_jax.data import annotations
from wtal_jax.errors import UserError

# "0:1:1e-9" would ask for a billion thresholds; nobody means that.
_MAX_THRESHOLDS = 1000
# How many unknown labels an error message lists before it says "and N more".
_MAX_LISTED = 5


# ---------------------------------------------------------------------------------------------
# Thresholds


def parse_tiou_thresholds(text: str) -> np.ndarray:
    """Parses tIoU thresholds: a range ``START:STOP:STEP`` (STOP included) or a list ``0.5,0.75``.

    Range values are rounded to 12 decimals, so ``0.1:0.7:0.1`` gives 0.3 and not
    0.30000000000000004 (NumPy's ``linspace(0.5, 0.95, 10)``, the ActivityNet default, gives
    0.8999999999999999 where this gives 0.9). Every value must lie in [0, 1].

    Returns:
      float64 (K,), in the order given.
    """
    def number(part: str) -> float:
        try:
            value = float(part)
        except ValueError:
            raise UserError(f'tIoU thresholds {text!r}: {part.strip()!r} is not a number') from None
        if not 0.0 <= value <= 1.0:  # also false for NaN
            raise UserError(f'tIoU thresholds {text!r}: {value} is not in [0, 1]')
        return value

    if ':' not in text:
        return np.array([number(part) for part in text.split(',')], dtype=np.float64)
    parts = text.split(':')
    if len(parts) != 3:
        raise UserError(f'tIoU thresholds {text!r}: a range is START:STOP:STEP, e.g. 0.1:0.7:0.1')
    start, stop, step = (number(part) for part in parts)
    if step <= 0.0 or stop < start:
        raise UserError(f'tIoU thresholds {text!r}: need STEP > 0 and START <= STOP')
    # The small slack keeps STOP when (stop - start) / step lands just below an integer.
    count = int(math.floor((stop - start) / step + 1e-9)) + 1
    if count > _MAX_THRESHOLDS:
        raise UserError(f'tIoU thresholds {text!r}: {count} values, at most {_MAX_THRESHOLDS}')
    return np.round(start + step * np.arange(count), 12)


def check_thresholds(tiou_thresholds: Any) -> np.ndarray:
    """Returns the thresholds as float64 (K,), K >= 1, each in [0, 1]; else a UserError."""
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64)
    if thresholds.ndim != 1 or thresholds.size == 0:
        raise UserError(f'tIoU thresholds must be a non-empty list, got shape {thresholds.shape}')
    if not np.all((thresholds >= 0.0) & (thresholds <= 1.0)):
        raise UserError(f'tIoU thresholds must lie in [0, 1], got {thresholds.tolist()}')
    return thresholds


# ---------------------------------------------------------------------------------------------
# Loading and validation


@dataclasses.dataclass(frozen=True, eq=False)
class GroundTruth:
    """Ground-truth action instances of one subset, flat, in file order.

    Attributes:
      subset: the subset kept, e.g. ``'test'``.
      class_names: (C,) labels in order of first appearance in this subset's annotations, as the
        official evaluation builds its activity index; class ``c`` is ``class_names[c]``.
      video_names: (V,) every video of the subset in file order, videos without annotations
        included (predictions there are false positives).
      video: int64 (N,) index into ``video_names`` of each instance.
      label: int64 (N,) index into ``class_names``.
      segments: float64 (N, 2) start and end in seconds, ``start <= end``.
    """
    subset: str
    class_names: tuple[str, ...]
    video_names: tuple[str, ...]
    video: np.ndarray
    label: np.ndarray
    segments: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class Predictions:
    """Predicted action instances, flat, in file order (videos in file order, then list order).

    Attributes:
      video_names: (W,) the videos of the results in file order.
      video: int64 (P,) index into ``video_names`` of each prediction.
      gt_video: int64 (P,) index into the ground truth's ``video_names``; -1 for a video outside
        the evaluated subset (all its predictions are false positives).
      label: int64 (P,) index into the ground truth's ``class_names``.
      score: float64 (P,).
      segments: float64 (P, 2) start and end in seconds, ``start <= end``.
      num_outside_subset: how many predictions lie in videos outside the subset.
      outside_subset_videos: those videos, in file order.
    """
    video_names: tuple[str, ...]
    video: np.ndarray
    gt_video: np.ndarray
    label: np.ndarray
    score: np.ndarray
    segments: np.ndarray
    num_outside_subset: int
    outside_subset_videos: tuple[str, ...]


def _is_number(value: Any) -> bool:
    """True for int and float (NumPy's too), False for booleans, strings and the rest."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _parse_prediction(entry: Any, where: str) -> tuple[str, float, float, float]:
    """Validates one prediction; returns (label, start, end, score).

    ``where`` names the file, the video and the entry's index for error messages.
    """
    label, start, end = annotations.parse_instance(entry, where)
    score = entry.get('score')
    if not _is_number(score) or not math.isfinite(score):
        raise UserError(f'{where}: score {score!r} is not a finite number')
    return label, start, end, float(score)


def _frozen(array: np.ndarray) -> np.ndarray:
    """Marks an array read-only, so the frozen containers above really are."""
    array.setflags(write=False)
    return array


def load_ground_truth(path: str, subset: str) -> GroundTruth:
    """The videos of ``subset`` of an annotation file (SPEC §1), flat, as the official evaluation
    builds its ground truth.

    The file is read and validated whole by :func:`wtal_jax.data.annotations.load_annotations`
    (bounds may be numbers or numeric strings; a video without an "annotations" field has no
    instances). Classes are numbered in order of first appearance in the subset; videos stay in
    file order, those without annotations included; zero-length instances are kept.

    Raises:
      UserError: a missing or malformed file; an instance whose segment is reversed, not numeric
        or not finite (naming the video and the instance's index); a subset without videos or
        without any instance.
    """
    database = annotations.load_annotations(path)
    videos = {name: a for name, a in database.items() if a.subset == subset}
    if not videos:
        subsets = sorted({a.subset for a in database.values()})
        raise UserError(f'{path}: no video of subset {subset!r} (subsets there: {subsets})')
    labels = [label for a in videos.values() for label in a.labels]
    if not labels:
        raise UserError(f'{path}: the {len(videos)} videos of subset {subset!r} have no '
                        'annotations, so there is nothing to evaluate')
    class_index = {name: c for c, name in enumerate(dict.fromkeys(labels))}
    counts = [len(a.labels) for a in videos.values()]
    return GroundTruth(
        subset=subset,
        class_names=tuple(class_index),
        video_names=tuple(videos),
        video=_frozen(np.repeat(np.arange(len(videos), dtype=np.int64), counts)),
        label=_frozen(np.array([class_index[label] for label in labels], dtype=np.int64)),
        segments=_frozen(np.concatenate([a.segments for a in videos.values()])),
    )


# Number types the fast path converts with float() without a second look (NumPy's scalars come
# from the localisation code when it hands over its dict directly).
_PLAIN_NUMBERS = {int, float, np.float64, np.float32, np.int64, np.int32}


class _NotSimple(Exception):
    """The fast column parser met something that needs the per-entry validator."""


def _plain_columns(entries: list) -> tuple[list, np.ndarray, np.ndarray]:
    """Labels (P,), scores float64 (P,) and segments float64 (P, 2) of plain JSON entries.

    Checks the whole file with a handful of C-level passes. Anything unusual, valid or not,
    raises ``_NotSimple`` (or a KeyError, TypeError, ...): ``_checked_columns`` then decides.
    """
    labels = [e['label'] for e in entries]
    raw_scores = [e['score'] for e in entries]
    raw_segments = [e['segment'] for e in entries]
    if (not set(map(type, labels)) <= {str} or not set(map(type, raw_scores)) <= _PLAIN_NUMBERS
            or not set(map(type, raw_segments)) <= {list, tuple}
            or not set(map(len, raw_segments)) <= {2}):
        raise _NotSimple
    bounds = list(itertools.chain.from_iterable(raw_segments))
    if not set(map(type, bounds)) <= _PLAIN_NUMBERS | {str}:
        raise _NotSimple
    # Python's float() on each bound, exactly as the official loader converts them.
    segments = np.fromiter(map(float, bounds), np.float64, len(bounds)).reshape(-1, 2)
    scores = np.fromiter(map(float, raw_scores), np.float64, len(raw_scores))
    if not (np.isfinite(segments).all() and np.isfinite(scores).all()
            and (segments[:, 1] >= segments[:, 0]).all()):
        raise _NotSimple
    return labels, scores, segments


def _checked_columns(results: Mapping, name: str) -> tuple[list, np.ndarray, np.ndarray]:
    """What ``_plain_columns`` returns, entry by entry: slower, and names the first bad entry."""
    parsed = [_parse_prediction(entry, f'{name}: video {video_name}, prediction {i}')
              for video_name, entries in results.items() for i, entry in enumerate(entries)]
    labels = [p[0] for p in parsed]
    segments = np.array([p[1:3] for p in parsed], dtype=np.float64).reshape(-1, 2)
    return labels, np.array([p[3] for p in parsed], dtype=np.float64), segments


def load_predictions(path_or_dict: Any, gt: GroundTruth) -> Predictions:
    """Loads detections in the ActivityNet results format and checks them against ``gt``.

    Format: ``{"results": {VIDEO: [{"label": ..., "score": ..., "segment": [s, e]}]}}``, from a
    file or an already-parsed dict (messages then say "predictions"). Order is kept: videos in
    file order, then list order; it decides how equal scores rank, as in the official code.

    Defined behaviour for unusual input:
      - empty results (or empty lists) are valid: every AP is then 0;
      - predictions in videos outside ``gt``'s subset are false positives, exactly as the
        official code counts them; ``num_outside_subset`` says how many there were;
      - zero-length segments (start == end) are valid;
      - UserError: a label that is not one of ``gt.class_names`` (the official code raises a
        KeyError; the message lists up to 5 such labels, each with a video); start > end; a
        non-finite or non-numeric score or bound; an entry that is not
        ``{"label", "score", "segment"}`` (these name the video and the entry's index); a file
        that is missing, not JSON, or has no "results" object.
    Scores are converted to float64.
    """
    name = 'predictions' if isinstance(path_or_dict, Mapping) else str(path_or_dict)
    data = (path_or_dict if isinstance(path_or_dict, Mapping)
            else annotations.read_json(path_or_dict))
    results = data.get('results') if isinstance(data, Mapping) else None
    if not isinstance(results, Mapping):
        raise UserError(f'{name}: no "results" object (expected the ActivityNet results format)')
    for video_name, entries in results.items():
        if not isinstance(entries, list):
            raise UserError(f'{name}: video {video_name}: expected a list of predictions, '
                            f'got {type(entries).__name__}')
    video_names = tuple(results)
    counts = np.array([len(entries) for entries in results.values()], dtype=np.int64)
    flat = [entry for entries in results.values() for entry in entries]
    try:
        labels, scores, segments = _plain_columns(flat)
    except (_NotSimple, KeyError, TypeError, ValueError, OverflowError):
        labels, scores, segments = _checked_columns(results, name)

    video = np.repeat(np.arange(len(video_names), dtype=np.int64), counts)
    class_index = {c: i for i, c in enumerate(gt.class_names)}
    label = np.array([class_index.get(c, -1) for c in labels], dtype=np.int64)
    unknown = np.flatnonzero(label < 0)
    if unknown.size:
        first_video: dict[str, str] = {}
        for i in unknown:
            first_video.setdefault(labels[i], video_names[video[i]])
        listed = ', '.join(f'{c!r} (video {v})' for c, v in itertools.islice(
            first_video.items(), _MAX_LISTED))
        more = len(first_video) - _MAX_LISTED
        raise UserError(
            f'{name}: {len(first_video)} predicted labels are not among the {len(gt.class_names)} '
            f'ground-truth classes of subset {gt.subset!r}: {listed}'
            + (f' and {more} more' if more > 0 else ''))

    gt_index = {v: i for i, v in enumerate(gt.video_names)}
    video_to_gt = np.array([gt_index.get(v, -1) for v in video_names], dtype=np.int64)
    outside = [v for v, g, n in zip(video_names, video_to_gt, counts) if g < 0 and n > 0]
    return Predictions(
        video_names=video_names,
        video=_frozen(video),
        gt_video=_frozen(video_to_gt[video]),
        label=_frozen(label),
        score=_frozen(scores),
        segments=_frozen(segments),
        num_outside_subset=int(counts[video_to_gt < 0].sum()),
        outside_subset_videos=tuple(outside),
    )


def input_warnings(gt: GroundTruth, preds: Predictions) -> list[str]:
    """One line per way the predictions do not cover the ground truth as expected, for stderr.

    Both cases are valid input that the official evaluation scores silently: predictions for
    videos outside the subset (false positives) and ground-truth videos without any prediction
    (every instance there is missed), e.g. a results file for 2 of 100 videos.
    """
    lines = []
    if preds.num_outside_subset:
        lines.append(f'{preds.num_outside_subset} predictions are for videos outside subset '
                     f'{gt.subset!r}; they count as false positives, as in the official evaluation')
    missing = videos_without_predictions(gt, preds)
    if missing:
        lines.append(f'{len(missing)} of the {len(gt.video_names)} ground-truth videos of subset '
                     f'{gt.subset!r} have no predictions (first: {missing[0]}); their instances '
                     'count as missed')
    return lines


def videos_without_predictions(gt: GroundTruth, preds: Predictions) -> tuple[str, ...]:
    """The ground-truth videos, in file order, that have no prediction (absent or empty list)."""
    covered = np.zeros(len(gt.video_names), dtype=bool)
    covered[preds.gt_video[preds.gt_video >= 0]] = True
    return tuple(v for v, c in zip(gt.video_names, covered) if not c)


# ---------------------------------------------------------------------------------------------
# The snippet-grid protocol (W-TALC / CO2-Net / DELU family)

# 25 fps video cut into 16-frame snippets. Those codebases compute ``t * 25 / 16``; multiplying
# by 1.5625 gives the same double, as the division by 16 is exact.
SNIPPETS_PER_SECOND = 25 / 16


def load_ambiguous(path: str) -> dict[str, np.ndarray]:
    """Reads a list of ambiguous segments, ``VIDEO START END`` (seconds) per line.

    THUMOS'14's ``Ambiguous_test.txt`` (distributed with the W-TALC / CO2-Net annotations) has this
    form, fields separated by spaces (the reference codebases split on one space and read fields
    2 and 3 of its two-space lines; any whitespace is accepted here). Blank lines are skipped.

    Returns:
      video id → float64 (m, 2) [start, end] seconds, in file order.
    """
    try:
        with open(path, encoding='utf-8') as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UserError(f'{path}: cannot read ({e.strerror or e})') from None
    except UnicodeDecodeError as e:
        raise UserError(f'{path}: not a text file ({annotations.one_line(e)})') from None
    segments: dict[str, list] = {}
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        where = f'{path}: line {number}'
        if len(fields) != 3:
            raise UserError(f'{where}: expected VIDEO START END, got {len(fields)} fields')
        segments.setdefault(fields[0], []).append(annotations.parse_segment(fields[1:], where))
    return {video: np.array(rows, np.float64) for video, rows in segments.items()}


def _keep_predictions(preds: Predictions, keep: np.ndarray) -> Predictions:
    """``preds`` restricted to the rows where ``keep`` (bool (P,)) is True, order kept."""
    gt_video = preds.gt_video[keep]
    outside = dict.fromkeys(preds.video_names[v] for v in preds.video[keep][gt_video < 0])
    return dataclasses.replace(
        preds, video=_frozen(preds.video[keep]), gt_video=_frozen(gt_video),
        label=_frozen(preds.label[keep]), score=_frozen(preds.score[keep]),
        segments=_frozen(preds.segments[keep]), num_outside_subset=int((gt_video < 0).sum()),
        outside_subset_videos=tuple(outside))


def snippet_protocol(gt: GroundTruth, preds: Predictions,
                     ambiguous: Mapping[str, np.ndarray] | None = None, *,
                     snippets_per_second: float = SNIPPETS_PER_SECOND
                     ) -> tuple[GroundTruth, Predictions]:
    """Ground truth and predictions as the W-TALC / CO2-Net / DELU codebases evaluate them.

    Their ``ANETdetection`` (``eval/eval_detection.py``) and ``filter_segments`` (in
    ``proposal_methods.py``) do, for THUMOS'14:

    - ground-truth bounds in snippet units: ``round(t * 25 / 16)`` (Python's round, half to even),
      for start and end alike;
    - predictions are made on that grid (start snippet, last snippet + 1); predictions given in
      seconds are mapped the same way as the ground truth, which gives back the exact indices of
      detections made at whole snippets (``t = index * 16 / 25``);
    - a prediction is dropped, whatever its class, when its snippets ``range(start, end)`` share
      at least one snippet with ``range(round(a * 25 / 16), round(b * 25 / 16))`` of an ambiguous
      segment [a, b] of its video (their set-IoU > 0; touching is not sharing);
    - then the official evaluation, unchanged, on these integer bounds.

    Args:
      gt, preds: from ``load_ground_truth`` and ``load_predictions``, bounds in seconds.
      ambiguous: from ``load_ambiguous``; None drops nothing.
      snippets_per_second: 25 / 16 for 16-frame snippets of 25 fps video.
    Returns:
      (gt, preds) with bounds in snippets (whole numbers, float64), and the kept predictions in
      file order (so ties rank as in the reference).
    """
    def grid(seconds: np.ndarray) -> np.ndarray:
        return np.rint(seconds * snippets_per_second)  # rint: half to even, as Python's round

    gt = dataclasses.replace(gt, segments=_frozen(grid(gt.segments)))
    segments = grid(preds.segments)
    keep = np.ones(len(segments), dtype=bool)
    for v, name in enumerate(preds.video_names):
        if name not in (ambiguous or {}):
            continue
        rows = np.flatnonzero(preds.video == v)
        amb = grid(ambiguous[name])
        # Integer ranges [s, e) and [a, b) share a snippet iff max(s, a) < min(e, b).
        shared = (np.maximum(segments[rows, None, 0], amb[None, :, 0])
                  < np.minimum(segments[rows, None, 1], amb[None, :, 1]))
        keep[rows[shared.any(axis=1)]] = False
    preds = dataclasses.replace(preds, segments=_frozen(segments))
    return gt, _keep_predictions(preds, keep)


# ---------------------------------------------------------------------------------------------
# Detection mAP


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


def aligned_rows(rows: Sequence[Sequence[Sequence[str]]]) -> list[str]:
    """Lines of a text table whose rows are groups of cells.

    Every row has the same number of groups and cells per group. Each column is as wide as its
    widest cell: the first group's cells are left-aligned (labels), the others right-aligned
    (numbers); cells are joined by a space, groups by ``' | '``.
    """
    widths = [[max(len(row[g][i]) for row in rows) for i in range(len(group))]
              for g, group in enumerate(rows[0])]
    lines = []
    for row in rows:
        groups = [' '.join(cell.ljust(w) if g == 0 else cell.rjust(w)
                           for cell, w in zip(group, widths[g])) for g, group in enumerate(row)]
        lines.append(' | '.join(groups))
    return lines


def format_table(result: DetectionResult) -> str:
    """Two lines like the paper's Table 1: thresholds, then mAP in percent, one decimal.

    ``mAP@tIoU |  0.1  0.2 ...  0.7 |  AVG`` over ``mAP (%)  | 67.5 61.2 ... 12.1 | 41.9``.
    """
    return '\n'.join(aligned_rows([
        [['mAP@tIoU'], [f'{t:g}' for t in result.tiou_thresholds], ['AVG']],
        [['mAP (%)'], [f'{100 * m:.1f}' for m in result.map], [f'{100 * result.average_map:.1f}']],
    ]))


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


def restrict_ground_truth(gt: GroundTruth, videos) -> GroundTruth:
    """The ground truth of ``videos`` only, as if the file had held just those videos.

    Videos keep their file order, and classes are re-indexed in order of first appearance
    among the kept instances (the official evaluation's class index), so restricting to every
    video of the subset returns ``gt`` unchanged. Videos not in the subset are ignored.
    """
    wanted = set(videos)
    keep_video = np.array([v in wanted for v in gt.video_names], bool)
    new_index = np.cumsum(keep_video) - 1
    keep = keep_video[gt.video]
    if not keep.any():
        raise UserError(f'none of the {len(wanted)} videos has ground truth in subset '
                        f'{gt.subset!r}')
    old_labels = gt.label[keep]
    order = list(dict.fromkeys(old_labels.tolist()))  # first appearance
    relabel = np.full(len(gt.class_names), -1, np.int64)
    relabel[order] = np.arange(len(order))
    return GroundTruth(
        subset=gt.subset,
        class_names=tuple(gt.class_names[c] for c in order),
        video_names=tuple(v for v, k in zip(gt.video_names, keep_video) if k),
        video=_frozen(new_index[gt.video[keep]].astype(np.int64)),
        label=_frozen(relabel[old_labels]),
        segments=_frozen(gt.segments[keep].copy()))
