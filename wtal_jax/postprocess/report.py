"""Every figure a paper quotes, from one set of detections (``wtal-jax map --report``,
``evaluate``).

Codebases disagree on what "average mAP" means, so the report gives all of them side by side:
mAP per tIoU; averages over each range in use; per-class AP; the list of evaluated videos; and,
where the caller has video-level class scores, video accuracy and classification mAP. Plain NumPy
(no JAX).

Which averages (``family``):
  - ``'thumos14'``: 0.1:0.5, 0.1:0.7 (the paper's), 0.1:0.9 and 0.3:0.7, step 0.1;
  - ``'activitynet'``: 0.5:0.95 step 0.05, with mAP at 0.5, 0.75 and 0.95 beside it;
  - ``'auto'``: ``'activitynet'`` when every requested threshold is at least 0.5 (ActivityNet's
    thresholds start at 0.5; THUMOS'14 figures are always quoted from 0.1 or 0.3), else
    ``'thumos14'``.
Every range is evaluated at all of its thresholds, whatever thresholds were requested; the
requested ones keep the keys of a plain evaluation (``tiou_thresholds``, ``mAP``,
``average_mAP``, ``ap``) with the same values.

Protocols: ``'seconds'`` is the official ActivityNet evaluation; ``'snippet'`` is the W-TALC /
CO2-Net / DELU one (``snippet.snippet_protocol``).
"""

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from wtal_jax.errors import UserError
from wtal_jax.postprocess import average_precision, eval_files, snippet

# Name of each range → its thresholds, as START:STOP:STEP (STOP included).
AVERAGE_RANGES = {
    'thumos14': {'0.1:0.5': '0.1:0.5:0.1', '0.1:0.7': '0.1:0.7:0.1', '0.1:0.9': '0.1:0.9:0.1',
                 '0.3:0.7': '0.3:0.7:0.1'},
    'activitynet': {'0.5:0.95': '0.5:0.95:0.05'},
}
# Single thresholds quoted beside the averages (ActivityNet papers: 0.5 / 0.75 / 0.95 / AVG).
QUOTED_THRESHOLDS = {'thumos14': (), 'activitynet': (0.5, 0.75, 0.95)}
FAMILIES = ('auto', *AVERAGE_RANGES)
PROTOCOLS = ('seconds', 'snippet')
DEFAULT_THRESHOLDS = '0.1:0.7:0.1'
# THUMOS'14 test videos the release leaves out (SPEC §1); codebases that keep two of them
# evaluate 212 videos.
THUMOS14_EXCLUDED = ('video_test_0000270', 'video_test_0001292', 'video_test_0001496')


class VideoLevelScores(NamedTuple):
    """Video-level class scores (e.g. ``p_act``) for the video accuracy and classification mAP.

    Attributes:
      video_names: V video ids, each one of the ground truth's videos.
      class_names: C class names, every class of the ground truth among them.
      scores: float (V, C); column c scores ``class_names[c]``.
    """
    video_names: Sequence[str]
    class_names: Sequence[str]
    scores: Any


def choose_family(tiou_thresholds: np.ndarray, family: str = 'auto') -> str:
    """``family``, or for ``'auto'`` the family the requested thresholds belong to (see above)."""
    if family not in FAMILIES:
        raise UserError(f'family {family!r} is not one of {", ".join(FAMILIES)}')
    if family != 'auto':
        return family
    return 'activitynet' if np.min(tiou_thresholds) >= 0.5 else 'thumos14'


def apply_protocol(gt: eval_files.GroundTruth, preds: eval_files.Predictions, protocol: str,
                   ambiguous: Mapping[str, np.ndarray] | None = None, *,
                   snippets_per_second: float = snippet.SNIPPETS_PER_SECOND):
    """(gt, preds) as ``protocol`` evaluates them: unchanged for ``'seconds'``; on the snippet
    grid, without the predictions overlapping ``ambiguous`` segments, for ``'snippet'``."""
    if protocol not in PROTOCOLS:
        raise UserError(f'protocol {protocol!r} is not one of {", ".join(PROTOCOLS)}')
    if protocol == 'seconds':
        if ambiguous is not None:
            raise UserError('a list of ambiguous segments applies to the snippet protocol only')
        return gt, preds
    return snippet.snippet_protocol(gt, preds, ambiguous,
                                       snippets_per_second=snippets_per_second)


def _with_extra(requested: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """Sorted union of the thresholds; an extra one within 1e-9 of a requested one is that one."""
    new = [t for t in extra if not np.any(np.abs(requested - t) <= 1e-9)]
    return np.unique(np.concatenate([requested, new]))


def _columns(thresholds: np.ndarray, wanted: Sequence[float]) -> np.ndarray:
    """Index into ``thresholds`` of each wanted value (the nearest, within 1e-9)."""
    return np.abs(thresholds[None, :] - np.asarray(wanted, np.float64)[:, None]).argmin(axis=1)


def video_level(gt: eval_files.GroundTruth, scores: VideoLevelScores,
                accuracy_threshold: float = 0.2) -> dict:
    """Video accuracy and classification mAP of ``scores`` against the ground truth's labels.

    A video's label set is the classes of its ground-truth instances (SPEC §1), in the columns of
    ``scores.class_names``. Returns ``{"video_accuracy", "classification_mAP"}``, fractions.
    """
    names, classes = tuple(scores.video_names), tuple(scores.class_names)
    values = np.asarray(scores.scores, np.float64)
    if values.shape != (len(names), len(classes)):
        raise UserError(f'video-level scores of shape {values.shape}, expected '
                        f'({len(names)} videos, {len(classes)} classes)')
    gt_index = {v: i for i, v in enumerate(gt.video_names)}
    unknown = [v for v in names if v not in gt_index]
    absent = [c for c in gt.class_names if c not in classes]
    if unknown or absent:
        what = (f'videos {", ".join(unknown[:3])} are not' if unknown else
                f'classes {", ".join(absent[:3])} of the ground truth are not scored,')
        raise UserError(f'video-level scores: {what} in subset {gt.subset!r} '
                        f'({len(unknown) + len(absent)} in all)')
    column = np.array([classes.index(c) for c in gt.class_names], np.int64)
    labels = np.zeros((len(gt.video_names), len(classes)), bool)
    labels[gt.video, column[gt.label]] = True
    labels = labels[[gt_index[v] for v in names]]
    return {'video_accuracy': average_precision.video_accuracy(values, labels, accuracy_threshold),
            'classification_mAP': average_precision.classification_map(values, labels)}


def report(gt: eval_files.GroundTruth, preds: eval_files.Predictions, **kwargs) -> dict:
    """Every figure of one set of detections, JSON-ready (see :func:`evaluate`)."""
    return evaluate(gt, preds, **kwargs)[0]


def evaluate(gt: eval_files.GroundTruth, preds: eval_files.Predictions, *,
             tiou_thresholds: Any = DEFAULT_THRESHOLDS, family: str = 'auto',
             protocol: str = 'seconds', ambiguous: Mapping[str, np.ndarray] | None = None,
             video_scores: VideoLevelScores | None = None, accuracy_threshold: float = 0.2,
             snippets_per_second: float = snippet.SNIPPETS_PER_SECOND
             ) -> tuple[dict, average_precision.DetectionResult]:
    """Every figure of one set of detections, JSON-ready, fractions (not percent), and the
    :class:`~wtal_jax.postprocess.average_precision.DetectionResult` at the requested thresholds.

    Args:
      gt, preds: from ``eval_files.load_ground_truth`` / ``load_predictions`` (seconds).
      tiou_thresholds: the thresholds of the plain keys, as an array or as text for
        ``eval_files.parse_tiou_thresholds``.
      family: which averages, ``'auto'``, ``'thumos14'`` or ``'activitynet'`` (module docstring).
      protocol: ``'seconds'`` or ``'snippet'``; ``ambiguous`` (from
        ``snippet.load_ambiguous``) with ``'snippet'`` only.
      video_scores: video-level class scores, for video accuracy and classification mAP.
      accuracy_threshold: a class counts as predicted for a video when its score is >= this.
    Returns:
      ``tiou_thresholds``, ``mAP``, ``average_mAP``, ``ap`` (as ``average_precision.result_to_json``,
      the same values as a plain evaluation at these thresholds); ``averages`` (range → mean mAP
      over all its thresholds); ``mAP_by_tiou`` (threshold text → mAP, every threshold
      evaluated); ``videos`` (the evaluated video ids, file order); ``protocol``, ``family``,
      ``subset``, ``num_instances``, ``num_predictions`` (evaluated),
      ``videos_without_predictions``;
      ``ambiguous_dropped`` (snippet protocol); ``video_accuracy``, ``accuracy_threshold`` and
      ``classification_mAP`` where ``video_scores`` is given.
    """
    if isinstance(tiou_thresholds, str):
        tiou_thresholds = eval_files.parse_tiou_thresholds(tiou_thresholds)
    requested = eval_files.check_thresholds(tiou_thresholds)
    family = choose_family(requested, family)
    ranges = {name: eval_files.parse_tiou_thresholds(spec)
              for name, spec in AVERAGE_RANGES[family].items()}
    extra = np.concatenate([*ranges.values(), QUOTED_THRESHOLDS[family]])
    every = _with_extra(requested, extra)
    eval_gt, eval_preds = apply_protocol(gt, preds, protocol, ambiguous,
                                         snippets_per_second=snippets_per_second)
    full = average_precision.evaluate_detection(eval_gt, eval_preds, every)

    # The requested thresholds' figures, taken from the full evaluation: thresholds are matched
    # independently, so these equal a plain evaluation at the requested thresholds, digit for digit.
    picked = _columns(full.tiou_thresholds, requested)
    plain = average_precision.DetectionResult(
        tiou_thresholds=requested, class_names=full.class_names, ap=full.ap[:, picked],
        map=full.map[picked], average_map=float(full.map[picked].mean()))
    figures = {
        'protocol': protocol,
        'family': family,
        'subset': gt.subset,
        **average_precision.result_to_json(plain),
        'averages': {name: float(full.map[_columns(full.tiou_thresholds, t)].mean())
                     for name, t in ranges.items()},
        'mAP_by_tiou': {f'{t:.12g}': float(m) for t, m in zip(full.tiou_thresholds, full.map)},
        'videos': list(gt.video_names),
        'num_instances': int(len(gt.label)),
        'num_predictions': int(len(eval_preds.score)),
        'videos_without_predictions': list(eval_files.videos_without_predictions(gt, preds)),
    }
    if protocol == 'snippet':
        figures['ambiguous_dropped'] = int(len(preds.score) - len(eval_preds.score))
    if video_scores is not None:
        figures.update(video_level(gt, video_scores, accuracy_threshold),
                       accuracy_threshold=float(accuracy_threshold))
    return figures, plain


def map_files(ground_truth: str, predictions: str, *, subset: str, tiou_thresholds: str,
              full: bool = False, family: str | None = None, protocol: str = 'seconds',
              ambiguous: str | None = None, warn=lambda line: None
              ) -> tuple[dict, average_precision.DetectionResult]:
    """``wtal-jax map``: an annotation file and a results file evaluated under ``protocol``.

    Returns (figures, the detection result at ``tiou_thresholds``): with ``full`` every figure
    of :func:`evaluate` (averages of ``family``), else the official evaluation's keys (and
    ``protocol`` where it is not 'seconds'). Problems with the input that do not stop it go to
    ``warn``, one line each, before the evaluation.
    """
    if family and not full:
        raise UserError('--family chooses the averages of --report; add --report')
    if ambiguous and protocol != 'snippet':
        raise UserError('--ambiguous applies to --protocol snippet only')
    tious = eval_files.parse_tiou_thresholds(tiou_thresholds)
    gt = eval_files.load_ground_truth(ground_truth, subset)
    preds = eval_files.load_predictions(predictions, gt)
    dropped = snippet.load_ambiguous(ambiguous) if ambiguous else None
    warnings = eval_files.input_warnings(gt, preds)
    if protocol == 'snippet' and dropped is None:
        warnings.append('no --ambiguous list: no prediction is dropped (the snippet-protocol '
                        "codebases drop those overlapping THUMOS'14's Ambiguous_test.txt)")
    for line in warnings:
        warn(line)
    if full:
        return evaluate(gt, preds, tiou_thresholds=tious, family=family or 'auto',
                        protocol=protocol, ambiguous=dropped)
    result = average_precision.evaluate_detection(*apply_protocol(gt, preds, protocol, dropped),
                                                  tious)
    figures = average_precision.result_to_json(result)
    if protocol != 'seconds':  # the plain keys alone stay the official evaluation's
        figures['protocol'] = protocol
    return figures, result
