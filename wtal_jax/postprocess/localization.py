"""Scores -> proposals -> NMS -> ActivityNet results JSON (SPEC §5 steps 5-10), plain NumPy,
for every method.

A method turns one video's network outputs into :class:`VideoScores`: the classes to localise,
a score per segment and class, the video-level term of each class, and its proposal families
(SPEC §5 step 6: candidates above thresholds of the class scores themselves, or of another
sequence such as UM's normalised magnitude). From there everything is shared and reproduces the
authors' releases (``test.py`` with ``utils.upgrade_resolution``, ``get_proposal_oic`` and
``nms``) proposal for proposal, but vectorised: every threshold of a family is one row of a
``(rows, positions)`` mask, the runs of all rows come from one flat pass, and their outer-inner
contrast scores from one ``np.add.reduceat`` of window sums. NMS is exact greedy NMS computed in
a few rounds. The only Python loops are over the selected classes of a video and over those
rounds.

Positions below index the upsampled sequence of ``L = len(np.arange(0, T', 1 / upsample))``
points (about ``upsample * T'``). Everything is computed in float64 (a method's float32 scores
keep float32 for the differences of neighbours in upsampling, as SciPy does). One module of
~500 lines: the steps of one algorithm, in order.
"""

import dataclasses
import math
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from wtal_jax.errors import UserError
from wtal_jax.io_utils import write_json_atomic


class VideoOutput(NamedTuple):
    """One video's network outputs from inference, as NumPy: what a method's ``scores`` reads.

    Attributes:
      outputs: the video's row of the method's ``videos`` outputs, {name: array}; per-segment
        arrays hold the padded length T >= ``length`` along their first axis.
      length: T', the sampled segments that are the video's own.
      num_segments: n, the video's original number of segments before sampling.
      duration: seconds, from the annotation file, if known.
    """
    outputs: Mapping[str, np.ndarray]
    length: int
    num_segments: int
    duration: float | None = None


class Family(NamedTuple):
    """One family of proposals (SPEC §5 step 6): a run of positions above each threshold.

    ``sequence`` None: each class's own score, set to 0 below the threshold, and the runs
    scored on that thresholded score (the releases' proposals on the class activation). Else a
    (T',) sequence shared by the classes (UM's normalised magnitude): candidates where it is at
    least the threshold and above 0, scored on the classes' unthresholded scores. ``name``
    says what the sequence is, for figures.
    """
    thresholds: tuple[float, ...]
    sequence: np.ndarray | None = None
    name: str = ''


class VideoScores(NamedTuple):
    """What a method gives localisation for one video (the hand-off; SPEC §5 steps 1-5).

    Attributes:
      p_act: (C,) video-level class scores (also video accuracy and classification mAP).
      scores: (T', C) score of each sampled segment for each class, as proposals are scored.
      classes: (K,) int64 classes to localise, ascending (K may be 0: nothing localised).
      class_score: (C,) the video-level term of a class's proposal scores, weighted by
        ``localize.p_act_weight`` (UM: p_act; BaS-Net: 1 for a localised class).
      families: the proposal families, in the order the release pools them.
      num_segments: n, the video's original number of segments before sampling.
      duration: seconds, from the annotation file, if known.
    """
    p_act: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    class_score: np.ndarray
    families: tuple[Family, ...]
    num_segments: int
    duration: float | None = None


class Detections(NamedTuple):
    """Detections of one video: per class in descending score order, classes in release order."""
    class_idx: np.ndarray  # (P,) int64 class indices
    score: np.ndarray  # (P,) float64 outer-inner contrast plus p_act_weight * class_score[c]
    segments: np.ndarray  # (P, 2) float64 [start, end] in seconds


@dataclasses.dataclass(frozen=True)
class LocalizeConfig:
    """The shared localisation settings, from a config (:meth:`from_config`)."""
    upsample: int  # interpolated points per sampled segment
    min_run_length: int  # shortest proposal kept, in upsampled positions
    outer_ratio: float  # outer window on each side, as a fraction of the run length
    p_act_weight: float  # weight of the video-level term in a proposal score
    nms_iou: float  # suppress proposals with "+1" IoU >= this (seconds)
    segment_frames: int  # frames per original segment
    fps: float  # frames per second of the features
    use_duration: bool  # seconds per original segment = duration / n (ActivityNet)

    @classmethod
    def from_config(cls, cfg) -> 'LocalizeConfig':
        z, d = cfg.localize, cfg.data
        return cls(upsample=z.upsample, min_run_length=z.min_run_length,
                   outer_ratio=z.outer_ratio, p_act_weight=z.p_act_weight, nms_iou=z.nms_iou,
                   segment_frames=d.segment_frames, fps=d.fps, use_duration=d.use_duration)


# ---------------------------------------------------------------------------------------------
# Scores (steps 4-5)


def minmax_per_class(s: np.ndarray, *, clip: bool) -> np.ndarray:
    """Min-max normalisation over time, per class, as the releases' ``minmax_norm``.

    Per class ``max = relu(max_t s)``, ``min = relu(min_t s)``, a non-positive ``max - min``
    replaced by 1, then ``(s - min) / (max - min)``; with ``clip``, clipped to [0, 1] (UM).
    Without, values below a positive minimum stay negative (BaS-Net's release).

    Args:
      s: (T', C) float; computed in its own dtype (BaS-Net's release normalises float32).
    Returns:
      (T', C) of ``s``'s dtype.
    """
    s = np.asarray(s)
    high = np.maximum(s.max(axis=0), 0.0)
    low = np.maximum(s.min(axis=0), 0.0)
    delta = high - low
    delta[delta <= 0] = 1
    out = (s - low) / delta
    return np.clip(out, 0, 1) if clip else out


def upsample(x: np.ndarray, factor: int) -> np.ndarray:
    """Linear interpolation along axis 0 at the points ``np.arange(0, T', 1 / factor)`` (step 5).

    Points past T' - 1 are extrapolated with the slope of the last interval. This is the
    arithmetic of the release's ``interp1d(kind='linear', fill_value='extrapolate')``: point p
    uses the interval [lo, lo + 1] with ``lo = clip(ceil(p), 1, T' - 1) - 1`` and the value
    ``(x[lo + 1] - x[lo]) * (p - lo) + x[lo]``. A single segment (T' = 1) has no interval; it
    is held constant (the release raises there).

    Args:
      x: (T', ...) values per sampled segment. A float32 ``x`` keeps its dtype for the
        difference of neighbours, as SciPy does (BaS-Net's float32 scores); the rest is float64.
      factor: points per segment.
    Returns:
      (L, ...) float64 with L = len(np.arange(0, T', 1 / factor)): factor * T', or one more
      where the division rounds up (e.g. factor 49).
    """
    x = np.asarray(x)
    if x.dtype != np.float32:
        x = x.astype(np.float64)
    num = x.shape[0]
    points = np.arange(0, num, 1 / factor)
    if num == 1:
        return np.repeat(x, points.size, axis=0).astype(np.float64)
    lo = np.clip(np.ceil(points).astype(np.int64), 1, num - 1) - 1
    frac = (points - lo).reshape((-1,) + (1,) * (x.ndim - 1))
    return (x[lo + 1] - x[lo]) * frac + x[lo]


# ---------------------------------------------------------------------------------------------
# Proposals (steps 6-8)


def find_runs(mask: np.ndarray) -> tuple[np.ndarray, ...]:
    """Runs of consecutive True positions along the last axis, found in one flat pass.

    Like ``np.nonzero``, returns one int64 array per leading axis (the row of each run) and then
    the starts and inclusive ends: ``(starts, ends)`` for a 1-D mask, ``(rows, starts, ends)``
    for a 2-D one. Runs are ordered by row, then by position.
    """
    mask = np.asarray(mask, bool)
    *lead, length = mask.shape
    # Rows laid end to end, each followed by a False, after one leading False: every run then
    # opens and closes inside its own row, so one comparison of neighbours in one flat buffer
    # finds them all, alternating start, end + 1. (A bool `!=` is ~10x faster than np.diff.)
    buf = np.zeros(math.prod(lead) * (length + 1) + 1, bool)
    buf[1:].reshape(-1, length + 1)[:, :length] = mask.reshape(-1, length)
    flips = np.flatnonzero(buf[1:] != buf[:-1])
    row, starts = np.divmod(flips[0::2], length + 1)
    ends = flips[1::2] - row * (length + 1) - 1
    if not lead:
        return starts, ends
    return (*np.unravel_index(row, lead), starts, ends)


def window_sums(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Sums of ``values[lo_i:hi_i]`` (half-open, 0 where empty) by one ``np.add.reduceat``.

    ``reduceat`` also sums the gap between one window and the next, so windows go in order of
    ``lo``: the forward gaps are then disjoint and the whole call reads each value at most
    about twice. (It is ~10x faster than ``np.cumsum`` here, whose additions are serial, and
    sums each window directly, like the release's ``np.mean``, with no cancellation.)

    Args:
      values: (V,) float64, V >= 1.
      lo, hi: (N,) int64 with 0 <= lo <= hi <= V.
    Returns:
      (N,) float64.
    """
    if lo.size == 0:
        return np.zeros(0)
    # reduceat takes bounds < V only: a window reaching the end stops one short, and gets
    # that last value added back.
    last = values.size - 1
    lo_in, hi_in = np.minimum(lo, last), np.minimum(hi, last)
    order = np.argsort(lo_in, kind='stable')
    bounds = np.empty(2 * lo.size, np.int64)
    bounds[0::2], bounds[1::2] = lo_in[order], hi_in[order]
    sums = np.empty(lo.size)
    sums[order] = np.add.reduceat(values, bounds)[0::2]
    # An empty window makes reduceat return values[lo] instead of 0.
    sums = np.where(hi_in > lo_in, sums, 0.0)
    return sums + np.where((hi > last) & (hi > lo), values[last], 0.0)


def outer_inner_contrast(seq: np.ndarray, rows: np.ndarray, starts: np.ndarray,
                         ends: np.ndarray, outer_ratio: float) -> np.ndarray:
    """Outer-inner contrast of runs (Liu et al., CVPR 2019; step 7), all runs at once.

    For run [a, b] of row r, with length len = b - a + 1: inner is the mean of seq[r, a..b];
    outer the mean of seq[r] over [max(0, int(a - ratio * len)), a) and
    (b, min(L - 1, int(b + ratio * len))], 0 when both are empty. ``int`` truncates toward zero
    like the release's Python ``int()``; after the clamp at 0 that equals a floor.

    Args:
      seq: (R, L) score sequences.
      rows, starts, ends: (N,) int run rows and inclusive bounds.
    Returns:
      (N,) float64 inner - outer.
    """
    length = seq.shape[1]
    base = rows * length  # windows never cross rows, so one flat array serves them all
    run_len = ends - starts + 1
    outer_lo = np.maximum(0, (starts - outer_ratio * run_len).astype(np.int64))
    outer_hi = np.minimum(length - 1, (ends + outer_ratio * run_len).astype(np.int64))
    lo = np.concatenate([starts, outer_lo, ends + 1]) + np.tile(base, 3)
    hi = np.concatenate([ends + 1, starts, outer_hi + 1]) + np.tile(base, 3)
    inner, left, right = np.split(window_sums(np.ravel(seq), lo, hi), 3)
    outer_count = (starts - outer_lo) + (outer_hi - ends)
    outer = np.where(outer_count > 0, (left + right) / np.maximum(outer_count, 1), 0.0)
    return inner / run_len - outer


def seconds_per_position(num_segments: int, num_sampled: int, cfg: LocalizeConfig,
                         duration: float | None = None) -> float:
    """Seconds per upsampled position (step 8): proposal [a, b] spans [a * k, (b + 1) * k].

    k = (segment_frames * n) / (upsample * T' * fps), the release's expression; with
    ``cfg.use_duration``, k = duration / (upsample * T') (seconds per original segment taken as
    duration / n, the ActivityNet convention).
    """
    if cfg.use_duration:
        if duration is None or not duration > 0:
            raise UserError(f'data.use_duration needs a positive duration, got {duration}')
        return duration / (cfg.upsample * num_sampled)
    return (cfg.segment_frames * num_segments) / (cfg.upsample * num_sampled * cfg.fps)


class _Proposals(NamedTuple):
    """Flat proposals of one video, grouped by class, each class in the release's order."""
    class_pos: np.ndarray  # (P,) int64 index into the localised classes
    row: np.ndarray  # (P,) int64 pool row: the families' thresholds in order
    start: np.ndarray  # (P,) int64 first upsampled position
    end: np.ndarray  # (P,) int64 last upsampled position (inclusive)
    contrast: np.ndarray  # (P,) float64 inner - outer


def _kept_runs(rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, cfg: LocalizeConfig
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs that become proposals: at least ``min_run_length`` positions long, and not
    the single candidate of a row whose only candidate is position 0 (the releases skip such
    a row: their ``if temp_list.any()`` tests the positions, and 0 is falsy)."""
    runs_per_row = np.bincount(rows)[rows] if rows.size else rows
    alone_at_0 = (starts == 0) & (ends == 0) & (runs_per_row == 1)
    keep = (ends - starts + 1 >= cfg.min_run_length) & ~alone_at_0
    return rows[keep], starts[keep], ends[keep]


def _class_family(scores: np.ndarray, thresholds: np.ndarray, cfg: LocalizeConfig
                  ) -> _Proposals:
    """Runs of each class's thresholded score, scored on that thresholded score.

    Values below a threshold are set to 0 and positions still > 0 are candidates; rows are
    (class, threshold) pairs, class-major, so the runs come out grouped by class.

    Args:
      scores: (K, L) upsampled scores of the localised classes.
      thresholds: (R1,).
    """
    num_classes, length = scores.shape
    cut = np.where(scores[:, None, :] >= thresholds[:, None], scores[:, None, :], 0.0)
    cut = cut.reshape(-1, length)  # row k * R1 + r
    rows, starts, ends = _kept_runs(*find_runs(cut > 0), cfg)
    contrast = outer_inner_contrast(cut, rows, starts, ends, cfg.outer_ratio)
    return _Proposals(rows // len(thresholds), rows % len(thresholds), starts, ends, contrast)


def _sequence_family(scores: np.ndarray, sequence: np.ndarray, thresholds: np.ndarray,
                     cfg: LocalizeConfig) -> _Proposals:
    """Runs of a thresholded shared sequence, scored on the classes' unthresholded scores.

    The candidates do not depend on the class, so each run is scored once per localised class.

    Args:
      scores: (K, L) upsampled scores of the localised classes.
      sequence: (L,) upsampled sequence (UM: the normalised magnitude).
      thresholds: (R2,).
    """
    num_classes = scores.shape[0]
    # Same rule as the release: values below the threshold set to 0, positions > 0 kept.
    thr_rows, starts, ends = _kept_runs(
        *find_runs((sequence >= thresholds[:, None]) & (sequence > 0)), cfg)
    num_runs = starts.size
    class_pos = np.repeat(np.arange(num_classes), num_runs)  # class-major, like the other
    contrast = outer_inner_contrast(scores, class_pos, np.tile(starts, num_classes),
                                    np.tile(ends, num_classes), cfg.outer_ratio)
    return _Proposals(class_pos, np.tile(thr_rows, num_classes), np.tile(starts, num_classes),
                      np.tile(ends, num_classes), contrast)


def _pool(families: Sequence[_Proposals], num_rows_before: Sequence[int]) -> _Proposals:
    """Concatenates families, class-major; within a class family by family, as the release."""
    parts = [p._replace(row=p.row + offset) for p, offset in zip(families, num_rows_before)]
    pooled = _Proposals(*(np.concatenate(arrays) for arrays in zip(*parts)))
    order = np.argsort(pooled.class_pos, kind='stable')
    return _Proposals(*(a[order] for a in pooled))


# ---------------------------------------------------------------------------------------------
# Non-maximum suppression (step 9)


def _suppression_pairs(starts: np.ndarray, ends: np.ndarray, iou: float):
    """All pairs (i, j), i < j, of proposals with "+1" IoU >= iou; (P,) bounds in any order.

    IoU >= iou > 0 forces |start_i - start_j| <= (1 / iou - 1) * min(len_i, len_j), since
    |d start| + |d end| = len_i + len_j - 2 inter and inter <= min(len). So after sorting by start,
    each proposal only needs the few that start within that reach after it (a hair wider, so
    rounding cannot lose a pair); the exact IoU then filters those candidates.

    Returns:
      (E,) int64 first and (E,) int64 second indices, first < second.
    """
    num = starts.size
    lengths = ends - starts + 1
    by_start = np.argsort(starts, kind='stable')
    sorted_starts = starts[by_start]
    reach = sorted_starts + (1 / iou - 1) * lengths[by_start] * (1 + 1e-9) + 1e-9
    counts = np.searchsorted(sorted_starts, reach, side='right') - np.arange(num) - 1
    first = np.repeat(np.arange(num), counts)
    # second = first + 1, first + 2, ... counts[first] of them
    second = first + 1 + np.arange(first.size) - np.repeat(np.cumsum(counts) - counts, counts)
    a, b = by_start[first], by_start[second]
    inter = np.maximum(0.0, np.minimum(ends[a], ends[b]) - np.maximum(starts[a], starts[b]) + 1)
    close = inter / (lengths[a] + lengths[b] - inter) >= iou
    a, b = a[close], b[close]
    return np.minimum(a, b), np.maximum(a, b)


def nms(segments: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS of one class with the release's "+1" IoU (step 9).

    ``len = end - start + 1``, ``inter = max(0, min_end - max_start + 1)``; proposals are visited
    in ``scores.argsort()[::-1]`` order (NumPy's default, unstable sort, as the release) and each
    one kept suppresses the later ones with IoU >= ``iou``.

    The result is exactly that greedy pass, computed in rounds instead of one kept proposal at a
    time: a proposal none of whose earlier neighbours (pairs with IoU >= iou) is still undecided
    is kept, which suppresses its later neighbours. Rounds are few (2-5 on THUMOS-sized inputs)
    where kept proposals number in the hundreds.

    Args:
      segments: (P, 2) [start, end].
      scores: (P,).
    Returns:
      (k,) int64 indices of the kept proposals, in descending score order (the order kept).
    """
    if not 0 < iou <= 1 or (segments[:, 1] < segments[:, 0]).any():
        raise ValueError(f'nms needs 0 < iou <= 1 and end >= start, got iou={iou}')
    order = np.asarray(scores).argsort()[::-1]
    # Ranks from here on: proposal r is the r-th visited.
    earlier, later = _suppression_pairs(segments[order, 0], segments[order, 1], iou)
    undecided = np.ones(order.size, bool)
    kept = np.zeros(order.size, bool)
    while undecided.any():
        waiting = np.zeros(order.size, bool)
        waiting[later] = True  # an earlier neighbour is still undecided
        new = undecided & ~waiting
        kept |= new
        undecided &= ~new
        undecided[later[new[earlier]]] = False  # suppressed
        # Pairs with a decided end can no longer change anything.
        live = undecided[earlier] & undecided[later]
        earlier, later = earlier[live], later[live]
    return order[np.flatnonzero(kept)]


# ---------------------------------------------------------------------------------------------
# One video, all videos, results file (steps 6-10)


def _check_video(vs: VideoScores, name: str, use_duration: bool) -> None:
    """Raises UserError naming the video if its arrays disagree in shape or are not finite."""
    p_act, scores, classes = (np.asarray(a) for a in (vs.p_act, vs.scores, vs.classes))
    num_classes = p_act.shape[0] if p_act.ndim == 1 else -1
    if scores.ndim != 2 or scores.shape[1] != num_classes or scores.shape[0] < 1:
        raise UserError(f'{name}: p_act shape {p_act.shape} and scores shape {scores.shape} '
                        'do not form (C,) and (T\', C) with T\' >= 1')
    if np.shape(vs.class_score) != (num_classes,) or classes.ndim != 1 or \
            not np.all((classes >= 0) & (classes < num_classes)):
        raise UserError(f'{name}: class_score shape {np.shape(vs.class_score)} or classes '
                        f'{classes.tolist()[:5]} do not fit {num_classes} classes')
    for family in vs.families:
        if family.sequence is not None and np.shape(family.sequence) != (scores.shape[0],):
            raise UserError(f'{name}: a proposal family\'s sequence has shape '
                            f'{np.shape(family.sequence)}, expected ({scores.shape[0]},)')
    values = (p_act, scores, np.asarray(vs.class_score, np.float64),
              *(f.sequence for f in vs.families if f.sequence is not None))
    if not all(np.isfinite(v).all() for v in values):
        raise UserError(f'{name}: non-finite scores')
    if use_duration and not (vs.duration is not None and vs.duration > 0):
        raise UserError(f'{name}: data.use_duration needs its duration, got {vs.duration}')


def _empty() -> Detections:
    return Detections(np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 2)))


def localize_video(vs: VideoScores, cfg: LocalizeConfig, *, name: str = 'video') -> Detections:
    """Detections of one video (SPEC §5 steps 5-9).

    Proposals of every family are pooled per class and NMS'd. Classes come in the order the
    release's dict inserts them (first threshold row giving the class a proposal, ties by class
    index); within a class detections are in descending score order.
    """
    _check_video(vs, name, cfg.use_duration)
    classes = np.asarray(vs.classes, np.int64)
    if classes.size == 0:
        return _empty()
    num_sampled = vs.scores.shape[0]
    sequences = [f.sequence for f in vs.families if f.sequence is not None]
    # One interpolation for the localised classes' scores and the families' sequences.
    up = np.ascontiguousarray(upsample(
        np.column_stack([np.asarray(vs.scores)[:, classes], *sequences]), cfg.upsample).T)
    scores, shared = up[:classes.size], up[classes.size:]

    families, offsets, rows_before, next_sequence = [], [], 0, 0
    for family in vs.families:
        thresholds = np.asarray(family.thresholds, np.float64)
        if thresholds.size:
            families.append(_class_family(scores, thresholds, cfg) if family.sequence is None
                            else _sequence_family(scores, shared[next_sequence], thresholds, cfg))
            offsets.append(rows_before)
        rows_before += thresholds.size
        next_sequence += family.sequence is not None
    if not families:
        return _empty()
    props = _pool(families, offsets)

    k = seconds_per_position(vs.num_segments, num_sampled, cfg, vs.duration)
    segments = np.stack([props.start * k, (props.end + 1) * k], axis=1)
    class_score = np.asarray(vs.class_score, np.float64)
    score = props.contrast + cfg.p_act_weight * class_score[classes[props.class_pos]]

    # Proposals are class-major, so each localised class is one contiguous slice.
    bounds = np.searchsorted(props.class_pos, np.arange(classes.size + 1))
    kept, first_rows = [], []
    for pos in range(classes.size):
        lo, hi = bounds[pos], bounds[pos + 1]
        if lo == hi:
            continue
        kept.append(lo + nms(segments[lo:hi], score[lo:hi], cfg.nms_iou))
        first_rows.append(props.row[lo:hi].min())
    if not kept:
        return _empty()
    # The release fills a dict threshold by threshold; a stable sort of the first row reproduces it.
    idx = np.concatenate([kept[i] for i in np.argsort(first_rows, kind='stable')])
    return Detections(classes[props.class_pos[idx]], score[idx], segments[idx])


def localize(videos: Mapping[str, VideoScores], class_names: Sequence[str],
             cfg: LocalizeConfig) -> dict:
    """Detections of every video as an ActivityNet results dict (SPEC §5 step 10).

    A video with no class to localise gets no entry, as in the releases.

    Returns:
      ``{"version", "results": {VIDEO: [{"label", "score", "segment": [start, end]}]},
      "external_data"}`` with plain Python floats, videos in the mapping's order.
    """
    import wtal_jax  # at call time: the package may import this module while it initialises

    results = {}
    for name, vs in videos.items():
        num_classes = np.shape(vs.p_act)[0] if np.ndim(vs.p_act) == 1 else None
        if num_classes != len(class_names):
            raise UserError(f'{name}: p_act has shape {np.shape(vs.p_act)} but there are '
                            f'{len(class_names)} class names')
        if not len(vs.classes):
            continue
        det = localize_video(vs, cfg, name=name)
        results[name] = [
            {'label': class_names[c], 'score': s, 'segment': [a, b]}
            for c, s, (a, b) in zip(det.class_idx.tolist(), det.score.tolist(),
                                    det.segments.tolist())]
    return {'version': f'wtal_jax {wtal_jax.__version__}', 'results': results,
            'external_data': {'used': True, 'details': 'I3D features (Kinetics-400)'}}


def write_results(path: str, results: dict) -> None:
    """Writes a results dict from :func:`localize` to ``path`` as JSON, atomically."""
    write_json_atomic(path, results)
