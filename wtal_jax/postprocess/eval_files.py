"""The two input files of an evaluation, loaded and validated once: the ground truth of a
subset and the predictions (ActivityNet JSON), and the tIoU thresholds.

Plain NumPy (no JAX). ``load_ground_truth`` (on the one annotation reader, ``data.annotations``)
and ``load_predictions`` flatten the JSON into arrays that ``average_precision`` ranks and
matches without a Python loop per prediction. Input that the official evaluation would crash on
or silently miscount (SPEC §6) is rejected with a ``UserError`` naming the file.
"""

import dataclasses
import itertools
import math
import numbers
from typing import Any, Mapping

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
