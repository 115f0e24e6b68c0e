"""One video and class of one run on a time axis in seconds: the class's segment score (what
its proposals are built from), each shared sequence with its thresholds, the proposals and
detections, and the ground truth -- one run's view of the paper's Fig. 4, for any method.

Localisation upsamples the T' sampled scores by linear interpolation at ``upsample`` points per
segment; the points after the last sampled segment are extrapolated with the slope of the last
interval (the releases' ``interp1d(fill_value='extrapolate')``, kept for parity). A figure draws
that tail dotted, clipped to the range of the interpolated part, on a grey band: the dip below
0 (or rise above 1) there is arithmetic, not a score.
"""

import dataclasses
from typing import NamedTuple

import numpy as np

from wtal_jax.postprocess import localization
from wtal_jax.tools.plots.canvas import COLORS, OUTSIDE, new_figure, value_range
from wtal_jax.tools.plots.run import RunView, describe

SOFTMAX_OUTPUT = 'cas_softmax'  # a video output of (T, C) drawn beside the score where present


class Sequence(NamedTuple):
    """A proposal family's shared sequence as localisation thresholds it.

    Attributes:
      values: (L,) the upsampled sequence.
      thresholds: the family's thresholds.
      family: its index in ``VideoScores.families``.
      name: what the sequence is (``Family.name``), or ''.
    """
    values: np.ndarray
    thresholds: tuple[float, ...]
    family: int
    name: str = ''


@dataclasses.dataclass(frozen=True)
class Timeline:
    """Everything the timeline of one video and class shows, in seconds.

    Attributes:
      video, class_name, p_act: the video, the class and its video-level score.
      times: (L,) times of the upsampled positions (position i at (i + 0.5) * k seconds).
      measured: positions 0 .. measured - 1 interpolate the sampled segments; the L - measured
        after them are extrapolated.
      score: (L,) the class's segment score upsampled, as localisation uses it (the scores of
        ``VideoScores``; extrapolated tail included).
      score_thresholds: thresholds of the families on the class's own score.
      softmax: (L,) the outputs' unfused segment softmax of the class, where they hold one.
      sequences: the shared sequences of the other families.
      proposals: (P, 3) [start, end, score] of every proposal before NMS.
      detections: (D, 3) [start, end, score] after NMS (what is evaluated).
      gt: (G, 2) ground-truth instances of the class; gt_other: (H, 2) of other classes.
      selected: whether the method localises the class in this video.
      method, run, seed, step: the method's name, the run's folder name, the seed and the
        checkpoint's step (see :attr:`source`).
    """
    video: str
    class_name: str
    p_act: float
    times: np.ndarray
    measured: int
    score: np.ndarray
    score_thresholds: tuple[float, ...]
    softmax: np.ndarray | None
    sequences: tuple[Sequence, ...]
    proposals: np.ndarray
    detections: np.ndarray
    gt: np.ndarray
    gt_other: np.ndarray
    selected: bool
    method: str = ''
    run: str = ''
    seed: int = 0
    step: int = 0

    @property
    def source(self) -> str:
        """The run this timeline is of (see ``run.describe``)."""
        return describe(self.run, self.method, self.seed, self.step)

    @property
    def end(self) -> float:
        """The video's end in seconds: the last position's time plus half a position."""
        step = self.times[1] - self.times[0] if self.times.size > 1 else 2 * self.times[0]
        return float(self.times[-1] + step / 2)


def _class_detections(vs: localization.VideoScores, cfg: localization.LocalizeConfig,
                      class_idx: int) -> np.ndarray:
    """(D, 3) [start, end, score] of one class's detections under ``cfg``."""
    det = localization.localize_video(vs, cfg)
    keep = det.class_idx == class_idx
    return np.column_stack([det.segments[keep], det.score[keep]]).reshape(-1, 3)


def measured_positions(num_sampled: int, factor: int) -> int:
    """How many of ``localization.upsample``'s points lie at or before the last sampled segment
    (the points are ``np.arange(0, T', 1 / factor)``; the ones after T' - 1 are extrapolated)."""
    return int(np.count_nonzero(np.arange(0, num_sampled, 1 / factor) <= num_sampled - 1))


def video_timeline(run: RunView, video: str | None = None,
                   class_name: str | None = None) -> Timeline:
    """The data of :func:`plot_timeline` (default video: the first with ground truth;
    default class: its first ground-truth class, else its highest-scoring one)."""
    v = run.video_index(video)
    out, gt = run.outputs()[v], run.split.gt[v]
    vs = run.evaluator.method.scores(out, hp=run.evaluator.hp)
    if class_name is None:
        c = int(gt.classes[0]) if len(gt.classes) else int(np.argmax(vs.p_act))
    else:
        c = run.class_index(class_name)
    cfg = run.localize_config
    num_sampled = vs.scores.shape[0]
    up = lambda x: localization.upsample(x, cfg.upsample)
    score = up(vs.scores[:, c])
    softmax = out.outputs.get(SOFTMAX_OUTPUT)
    k = localization.seconds_per_position(vs.num_segments, num_sampled, cfg, vs.duration)
    # Proposals are the pool before NMS: the same localisation with a suppression that only
    # drops exact duplicates (IoU >= 1).
    pool = dataclasses.replace(cfg, nms_iou=1.0)
    gt_seg = np.asarray(gt.segments, np.float64).reshape(-1, 2)
    return Timeline(
        video=run.split.names[v], class_name=run.names[c], p_act=float(vs.p_act[c]),
        times=(np.arange(score.size) + 0.5) * k,
        measured=measured_positions(num_sampled, cfg.upsample), score=score,
        score_thresholds=tuple(t for f in vs.families if f.sequence is None
                               for t in f.thresholds),
        softmax=None if softmax is None else up(np.asarray(softmax)[:num_sampled, c]),
        sequences=tuple(Sequence(up(f.sequence), tuple(f.thresholds), i, f.name)
                        for i, f in enumerate(vs.families) if f.sequence is not None),
        proposals=_class_detections(vs, pool, c), detections=_class_detections(vs, cfg, c),
        gt=gt_seg[gt.classes == c], gt_other=gt_seg[gt.classes != c],
        selected=bool(c in vs.classes), method=run.method_name, run=run.label,
        seed=run.seed, step=run.step)


# ---------------------------------------------------------------------------------------------
# Drawing


def draw_curve(ax, t: Timeline, values: np.ndarray, **style) -> None:
    """``values`` (L,) against ``t.times``: solid where they interpolate sampled segments; over
    the extrapolated tail dotted and clipped to the interpolated part's range."""
    m = t.measured
    body = values[:m]
    ax.plot(t.times[:m], body, **style)
    if m < values.size:
        style = {**style, 'ls': ':', 'label': None}
        ax.plot(t.times[m - 1:], np.clip(values[m - 1:], body.min(), body.max()), **style)


def mark_tail(ax, t: Timeline, *, label: str | None = None) -> None:
    """A grey band over the extrapolated tail (after the last sampled segment)."""
    if t.measured < t.times.size:
        ax.axvspan(t.times[t.measured - 1], t.end, facecolor='none', hatch='///',
                   edgecolor=COLORS['tail'], lw=0, zorder=0, label=label)


def draw_band(ax, thresholds, *, label: str) -> None:
    """The span of a family's thresholds, as a light band."""
    if thresholds:
        ax.axhspan(min(thresholds), max(thresholds), color='0.85', alpha=0.5, lw=0,
                   label=label)


def draw_gt(ax, t: Timeline, *, legend: dict = OUTSIDE) -> None:
    """Ground truth of the class (green) and of the other classes (grey) as bars, with a
    legend placed by ``legend`` (matplotlib's keywords)."""
    for segs, color, label in ((t.gt_other, COLORS['gt_other'], 'other classes'),
                               (t.gt, COLORS['gt'], t.class_name)):
        if len(segs):
            ax.broken_barh([(s, e - s) for s, e in segs], (0.1, 0.8), color=color,
                           label=label)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_ylabel('ground truth')
    if len(t.gt) or len(t.gt_other):
        ax.legend(**legend)


TAIL_LABEL = 'extrapolated tail (clipped)'


def _score_axes(ax, t: Timeline) -> None:
    note = '' if t.selected else ' -- not localised in this video'
    ax.set_title(f'{t.video}: {t.class_name} (video score {t.p_act:.3f}){note}')
    mark_tail(ax, t, label=TAIL_LABEL)
    draw_band(ax, t.score_thresholds, label='score thresholds')
    draw_curve(ax, t, t.score, color=COLORS['score'], lw=1.5, label='segment score')
    shown = [t.score[:t.measured]]
    if t.softmax is not None:
        draw_curve(ax, t, t.softmax, color=COLORS['softmax'], lw=1, ls='--',
                   label='segment softmax (unfused)')
        shown.append(t.softmax[:t.measured])
    ax.set_ylabel('score')
    ax.set_ylim(*value_range(np.concatenate(shown)))
    ax.legend(**OUTSIDE)


def _sequence_axes(ax, t: Timeline, seq: Sequence) -> None:
    mark_tail(ax, t)
    draw_band(ax, seq.thresholds, label='its thresholds')
    draw_curve(ax, t, seq.values, color=COLORS['sequence'], lw=1.5,
               label=seq.name or f'shared sequence (family {seq.family + 1})')
    ax.set_ylabel('sequence')
    ax.set_ylim(*value_range(seq.values[:t.measured]))
    ax.legend(**OUTSIDE)


def _detection_axes(ax, t: Timeline, max_detections: int) -> None:
    if len(t.proposals):
        ax.hlines(t.proposals[:, 2], t.proposals[:, 0], t.proposals[:, 1],
                  color=COLORS['proposal'], lw=1, label=f'proposals ({len(t.proposals)})')
    shown = t.detections[np.argsort(-t.detections[:, 2], kind='stable')[:max_detections]]
    if len(shown):
        ax.hlines(shown[:, 2], shown[:, 0], shown[:, 1], color=COLORS['detection'], lw=2.5,
                  label=f'detections (top {len(shown)} of {len(t.detections)})')
        ax.legend(**OUTSIDE)
    else:
        ax.text(0.5, 0.5, 'no detections of this class', transform=ax.transAxes,
                ha='center', va='center')
    ax.set_ylabel('detection score')


def plot_timeline(t: Timeline, *, max_detections: int = 30):
    """Stacked axes sharing the time axis: the score, one per shared sequence, the proposals
    and detections, the ground truth; titled by ``t.source`` where it names a run."""
    ratios = [2.0] + [1.4] * len(t.sequences) + [1.6, 0.7]
    fig, axes = new_figure(len(ratios), 1, figsize=(11.5, 1.25 * sum(ratios)), sharex=True,
                           gridspec_kw={'height_ratios': ratios})
    axes = axes[:, 0]
    _score_axes(axes[0], t)
    for ax, seq in zip(axes[1:-2], t.sequences):
        _sequence_axes(ax, t, seq)
    _detection_axes(axes[-2], t, max_detections)
    draw_gt(axes[-1], t)
    axes[-1].set_xlabel('time (s)')
    axes[-1].set_xlim(0, t.end)
    if t.run:
        fig.suptitle(t.source, fontsize='medium')
    return fig


def timeline_figure(run: RunView, video: str | None = None, class_name: str | None = None):
    """One run's Fig. 4 for one video and class: see :func:`video_timeline`,
    :func:`plot_timeline`."""
    return plot_timeline(video_timeline(run, video, class_name))
