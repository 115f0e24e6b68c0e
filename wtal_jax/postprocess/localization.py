"""Scores -> proposals -> NMS -> ActivityNet results JSON (SPEC §5, steps 2-10), plain NumPy.

Reproduces the authors' release (``test.py`` with ``utils.upgrade_resolution``,
``get_proposal_oic`` and ``nms``) proposal for proposal, but vectorised: every threshold of a
family is one row of a ``(rows, positions)`` mask, the runs of all rows come from one flat pass,
and their outer-inner contrast scores from one ``np.add.reduceat`` of window sums. NMS is exact
greedy NMS computed in a few rounds. The only Python loops are over the selected classes of a
video and over those rounds.

Positions below index the upsampled sequence of ``L = len(np.arange(0, T', 1 / upsample))``
points (about ``upsample * T'``). Everything is computed in float64.
"""

import dataclasses
import math
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from wtal_jax.errors import UserError
from wtal_jax.io_utils import write_json_atomic

# The release's exact float values (np.arange accumulates, e.g. 0.07500000000000001).
_SCORE_THRESHOLDS = tuple(float(t) for t in np.arange(0, 0.25, 0.025))  # 10 values
_MAGNITUDE_THRESHOLDS = tuple(float(t) for t in np.arange(0.4, 0.625, 0.025))  # 9 values
_FAMILIES = ('score', 'magnitude')


class VideoScores(NamedTuple):
    """What the model gives for one test video (SPEC §5.1), as NumPy arrays."""
    p_act: np.ndarray  # (C,) video-level action probabilities (softmax over classes)
    cas_softmax: np.ndarray  # (T', C) segment-level softmax over classes, T' = min(n, T)
    magnitudes: np.ndarray  # (T',) feature magnitudes ||f_t||_2 of the embedded features
    mu_act: float  # mean magnitude over the pseudo-action segments (top-k_act, no mask)
    mu_bkg: float  # mean magnitude over the pseudo-background segments
    num_segments: int  # n, the video's original number of segments before sampling
    duration: float | None = None  # seconds, from the annotation file, if known


class Detections(NamedTuple):
    """Detections of one video: per class in descending score order, classes in release order."""
    class_idx: np.ndarray  # (P,) int64 class indices
    score: np.ndarray  # (P,) float64 outer-inner contrast plus p_act_weight * p_act[c]
    segments: np.ndarray  # (P, 2) float64 [start, end] in seconds


@dataclasses.dataclass(frozen=True)
class LocalizeConfig:
    """Localisation settings; the defaults are the release's THUMOS'14 values."""
    theta_vid: float = 0.2  # p_act threshold for the classes to localise (probability)
    upsample: int = 24  # interpolated points per sampled segment
    score_thresholds: tuple[float, ...] = _SCORE_THRESHOLDS  # on the fused score, in [0, 1]
    magnitude_thresholds: tuple[float, ...] = _MAGNITUDE_THRESHOLDS  # on normalised magnitude u
    min_run_length: int = 2  # shortest proposal kept, in upsampled positions
    outer_ratio: float = 0.25  # outer window on each side, as a fraction of the run length
    p_act_weight: float = 0.2  # weight of the video-level score in a proposal score
    nms_iou: float = 0.6  # suppress proposals with "+1" IoU >= this (seconds)
    segment_frames: int = 16  # frames per original segment
    fps: float = 25.0  # frames per second of the features
    use_duration: bool = False  # seconds per original segment = duration / n (ActivityNet)
    families: tuple[str, ...] = _FAMILIES  # proposal families: 'score' and/or 'magnitude'
    fuse_magnitude: bool = True  # False: softmax-only score, no magnitude family (Table 3)

    def __post_init__(self):
        # Config files give lists; keep hashable tuples of floats.
        for name in ('score_thresholds', 'magnitude_thresholds'):
            object.__setattr__(self, name, tuple(float(t) for t in getattr(self, name)))
        object.__setattr__(self, 'families', tuple(self.families))
        unknown = sorted(set(self.families) - set(_FAMILIES))
        if unknown or not self.families:
            raise UserError(f'localize.families must name some of {_FAMILIES}, got {self.families}')
        if int(self.upsample) != self.upsample or self.upsample < 1:
            raise UserError(f'localize.upsample must be a positive integer, got {self.upsample}')
        if self.min_run_length < 1:
            raise UserError(f'localize.min_run_length must be >= 1, got {self.min_run_length}')
        if not 0 < self.nms_iou <= 1:
            raise UserError(f'localize.nms_iou must be in (0, 1], got {self.nms_iou}')
        if self.outer_ratio < 0 or self.segment_frames <= 0 or self.fps <= 0:
            raise UserError('localize.outer_ratio must be >= 0 and segment_frames, fps > 0, got '
                            f'{self.outer_ratio}, {self.segment_frames}, {self.fps}')


# ---------------------------------------------------------------------------------------------
# Scores (steps 2-5)


def select_classes(p_act: np.ndarray, theta: float) -> np.ndarray:
    """Classes to localise: those with p_act >= theta, else the arg-max class (step 2).

    Returns:
      (K,) int64 class indices in ascending order, K >= 1.
    """
    selected = np.flatnonzero(np.asarray(p_act) >= theta)
    if selected.size == 0:
        selected = np.array([np.argmax(p_act)])
    return selected.astype(np.int64)


def normalized_magnitude(magnitudes: np.ndarray, mu_act: float, mu_bkg: float) -> np.ndarray:
    """u_t = clip((m_t - mu_bkg) / (mu_act - mu_bkg), 0, 1) (step 3), (T',) -> (T',) float64.

    A non-positive denominator is replaced by 1, as the release's ``minmax_norm`` does.
    """
    delta = mu_act - mu_bkg
    if delta <= 0:
        delta = 1.0
    return np.clip((np.asarray(magnitudes, np.float64) - mu_bkg) / delta, 0.0, 1.0)


def fused_scores(cas_softmax: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Eq. 3 fused score, min-max normalised per class over time (step 4).

    ``s = cas_softmax * u[:, None]``; per class ``max = relu(max_t s)``, ``min = relu(min_t s)``,
    a non-positive ``max - min`` replaced by 1, and the result clipped to [0, 1].

    Args:
      cas_softmax: (T', C) segment-level softmax over classes.
      u: (T',) normalised magnitudes (all ones for softmax-only scores).
    Returns:
      (T', C) float64.
    """
    s = np.asarray(cas_softmax, np.float64) * np.asarray(u, np.float64)[:, None]
    high = np.maximum(s.max(axis=0), 0.0)
    low = np.maximum(s.min(axis=0), 0.0)
    delta = high - low
    delta[delta <= 0] = 1.0
    return np.clip((s - low) / delta, 0.0, 1.0)


def upsample(x: np.ndarray, factor: int) -> np.ndarray:
    """Linear interpolation along axis 0 at the points ``np.arange(0, T', 1 / factor)`` (step 5).

    Points past T' - 1 are extrapolated with the slope of the last interval. This is the
    arithmetic of the release's ``interp1d(kind='linear', fill_value='extrapolate')``: point p
    uses the interval [lo, lo + 1] with ``lo = clip(ceil(p), 1, T' - 1) - 1`` and the value
    ``(x[lo + 1] - x[lo]) * (p - lo) + x[lo]``. A single segment (T' = 1) has no interval; it
    is held constant (the release raises there).

    Args:
      x: (T', ...) values per sampled segment.
      factor: points per segment.
    Returns:
      (L, ...) float64 with L = len(np.arange(0, T', 1 / factor)): factor * T', or one more
      where the division rounds up (e.g. factor 49).
    """
    x = np.asarray(x, np.float64)
    num = x.shape[0]
    points = np.arange(0, num, 1 / factor)
    if num == 1:
        return np.repeat(x, points.size, axis=0)
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
            raise UserError(f'localize.use_duration needs a positive duration, got {duration}')
        return duration / (cfg.upsample * num_sampled)
    return (cfg.segment_frames * num_segments) / (cfg.upsample * num_sampled * cfg.fps)


class _Proposals(NamedTuple):
    """Flat proposals of one video, grouped by class, each class in the release's order."""
    class_pos: np.ndarray  # (P,) int64 index into the selected classes
    row: np.ndarray  # (P,) int64 pool row: score thresholds first, then magnitude thresholds
    start: np.ndarray  # (P,) int64 first upsampled position
    end: np.ndarray  # (P,) int64 last upsampled position (inclusive)
    contrast: np.ndarray  # (P,) float64 inner - outer


def _score_family(scores: np.ndarray, thresholds: np.ndarray, cfg: LocalizeConfig) -> _Proposals:
    """Family 1: runs of the thresholded fused score, scored on that thresholded score.

    Values below a threshold are set to 0 and positions still > 0 are candidates; rows are
    (class, threshold) pairs, class-major, so the runs come out grouped by class.

    Args:
      scores: (K, L) upsampled fused scores of the selected classes.
      thresholds: (R1,).
    """
    num_classes, length = scores.shape
    cut = np.where(scores[:, None, :] >= thresholds[:, None], scores[:, None, :], 0.0)
    cut = cut.reshape(-1, length)  # row k * R1 + r
    rows, starts, ends = find_runs(cut > 0)
    long = ends - starts + 1 >= cfg.min_run_length
    rows, starts, ends = rows[long], starts[long], ends[long]
    contrast = outer_inner_contrast(cut, rows, starts, ends, cfg.outer_ratio)
    return _Proposals(rows // len(thresholds), rows % len(thresholds), starts, ends, contrast)


def _magnitude_family(scores: np.ndarray, u: np.ndarray, thresholds: np.ndarray,
                      cfg: LocalizeConfig) -> _Proposals:
    """Family 2: runs of the thresholded magnitude, scored on the unthresholded fused score.

    The candidates do not depend on the class, so each run is scored once per selected class.

    Args:
      scores: (K, L) upsampled fused scores of the selected classes.
      u: (L,) upsampled normalised magnitude.
      thresholds: (R2,).
    """
    num_classes = scores.shape[0]
    # Same rule as the release: values below the threshold set to 0, positions > 0 kept.
    thr_rows, starts, ends = find_runs((u >= thresholds[:, None]) & (u > 0))
    long = ends - starts + 1 >= cfg.min_run_length
    thr_rows, starts, ends = thr_rows[long], starts[long], ends[long]
    num_runs = starts.size
    class_pos = np.repeat(np.arange(num_classes), num_runs)  # class-major, like family 1
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
# One video, all videos, results file (steps 2-10)


def _check_video(vs: VideoScores, name: str, use_duration: bool) -> None:
    """Raises UserError naming the video if its arrays disagree in shape or are not finite."""
    p_act, cas, mags = (np.asarray(a) for a in (vs.p_act, vs.cas_softmax, vs.magnitudes))
    if p_act.ndim != 1 or cas.ndim != 2 or cas.shape[1] != p_act.shape[0] or cas.shape[0] < 1:
        raise UserError(f'{name}: p_act shape {p_act.shape} and cas_softmax shape {cas.shape} '
                        'do not form (C,) and (T\', C) with T\' >= 1')
    if mags.shape != (cas.shape[0],):
        raise UserError(f'{name}: magnitudes shape {mags.shape}, expected ({cas.shape[0]},)')
    if not cas.shape[0] <= vs.num_segments:
        raise UserError(f'{name}: {cas.shape[0]} sampled segments but only '
                        f'num_segments={vs.num_segments} originally')
    values = (p_act, cas, mags, np.array([vs.mu_act, vs.mu_bkg], np.float64))
    if not all(np.isfinite(v).all() for v in values):
        raise UserError(f'{name}: non-finite p_act, cas_softmax, magnitudes or mu_act/mu_bkg')
    if use_duration and not (vs.duration is not None and vs.duration > 0):
        raise UserError(f'{name}: localize.use_duration needs its duration, got {vs.duration}')


def localize_video(vs: VideoScores, cfg: LocalizeConfig = LocalizeConfig(), *,
                   name: str = 'video') -> Detections:
    """Detections of one video (SPEC §5 steps 2-9).

    Proposals of both families are pooled per class and NMS'd. Classes come in the order the
    release's dict inserts them (first threshold row giving the class a proposal, ties by class
    index); within a class detections are in descending score order.
    """
    _check_video(vs, name, cfg.use_duration)
    # Compared in its own dtype (float32 from the model), as the release compares its scores.
    selected = select_classes(vs.p_act, cfg.theta_vid)
    p_act = np.asarray(vs.p_act, np.float64)
    num_sampled = vs.cas_softmax.shape[0]
    u = normalized_magnitude(vs.magnitudes, vs.mu_act, vs.mu_bkg)
    fused = fused_scores(vs.cas_softmax, u if cfg.fuse_magnitude else np.ones(num_sampled))
    # One interpolation for the selected classes' scores and u (last row): (K + 1, L).
    up = np.ascontiguousarray(upsample(np.column_stack([fused[:, selected], u]), cfg.upsample).T)
    scores, u_up = up[:-1], up[-1]

    families, offsets = [], []
    score_thr = np.asarray(cfg.score_thresholds, np.float64)
    mag_thr = np.asarray(cfg.magnitude_thresholds, np.float64)
    if 'score' in cfg.families and score_thr.size:
        families.append(_score_family(scores, score_thr, cfg))
        offsets.append(0)
    if 'magnitude' in cfg.families and cfg.fuse_magnitude and mag_thr.size:
        families.append(_magnitude_family(scores, u_up, mag_thr, cfg))
        offsets.append(score_thr.size)
    if not families:
        return Detections(np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 2)))
    props = _pool(families, offsets)

    k = seconds_per_position(vs.num_segments, num_sampled, cfg, vs.duration)
    segments = np.stack([props.start * k, (props.end + 1) * k], axis=1)
    score = props.contrast + cfg.p_act_weight * p_act[selected[props.class_pos]]

    # Proposals are class-major, so each selected class is one contiguous slice.
    bounds = np.searchsorted(props.class_pos, np.arange(selected.size + 1))
    kept, first_rows = [], []
    for pos in range(selected.size):
        lo, hi = bounds[pos], bounds[pos + 1]
        if lo == hi:
            continue
        kept.append(lo + nms(segments[lo:hi], score[lo:hi], cfg.nms_iou))
        first_rows.append(props.row[lo:hi].min())
    if not kept:
        return Detections(np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 2)))
    # The release fills a dict threshold by threshold; a stable sort of the first row reproduces it.
    idx = np.concatenate([kept[i] for i in np.argsort(first_rows, kind='stable')])
    return Detections(selected[props.class_pos[idx]], score[idx], segments[idx])


def localize(videos: Mapping[str, VideoScores], class_names: Sequence[str],
             cfg: LocalizeConfig = LocalizeConfig()) -> dict:
    """Detections of every video as an ActivityNet results dict (SPEC §5 step 10).

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
