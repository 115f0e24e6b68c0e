"""The snippet-grid protocol of the W-TALC / CO2-Net / DELU codebases (``--protocol snippet``).

Both the ground truth and the predictions are mapped onto the 16-frame snippet grid of 25 fps
video as those codebases do, and the predictions overlapping THUMOS'14's ambiguous segments are
dropped; the mAP is then the official one (``average_precision``). Plain NumPy.
"""

import dataclasses
from typing import Mapping

import numpy as np

from wtal_jax import io_utils
from wtal_jax.data import annotations
from wtal_jax.errors import UserError
from wtal_jax.postprocess.eval_files import GroundTruth, Predictions, _frozen

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
    lines = io_utils.read_text(path, what='a list of ambiguous segments').splitlines()
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
