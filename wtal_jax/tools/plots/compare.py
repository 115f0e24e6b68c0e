"""One video and class of several runs on one time axis in seconds (the paper's Fig. 4): per
run, its method's segment score of the class and its detections as bars; the ground truth as
bars below. The runs must share the evaluated split and the class list."""

from collections.abc import Sequence

import numpy as np

from wtal_jax.errors import UserError
from wtal_jax.tools.plots.canvas import OUTSIDE, new_figure, value_range
from wtal_jax.tools.plots.run import RunView
from wtal_jax.tools.plots.timeline import Timeline, draw_curve, draw_gt, mark_tail, \
    video_timeline

# One colour per run, in order (green is the ground truth's).
RUN_COLORS = ('#1f77b4', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22')


def _classes_text(names) -> str:
    return f'{len(names)} classes: {", ".join(names[:3])}{", ..." if len(names) > 3 else ""}'


def check_alike(runs: Sequence[RunView]) -> None:
    """Raises one UserError line where a run's classes, split or ground truth differ from the
    first run's."""
    first = runs[0]
    for run in runs[1:]:
        if run.names != first.names:
            raise UserError(f'{run.workdir}: class list ({_classes_text(run.names)}) differs '
                            f"from {first.workdir}'s ({_classes_text(first.names)})")
        if (run.split_name, run.split.names) != (first.split_name, first.split.names):
            raise UserError(f'{run.workdir}: its {run.split_name} split ({len(run.split)} '
                            f"videos) differs from {first.workdir}'s {first.split_name} split "
                            f'({len(first.split)} videos)')
        for name, a, b in zip(run.split.names, first.split.gt, run.split.gt):
            if not (np.array_equal(a.classes, b.classes) and np.array_equal(a.segments,
                                                                             b.segments)):
                raise UserError(f"{run.workdir}: the ground truth of {name} differs from "
                                f"{first.workdir}'s (other annotation files?)")


def compare_timelines(runs: Sequence[RunView], video: str | None = None,
                      class_name: str | None = None) -> list[Timeline]:
    """Each run's :class:`Timeline` of one video and class, after :func:`check_alike`
    (default video and class: the first run's defaults)."""
    if len(runs) < 2:
        raise UserError(f'a comparison needs at least two runs, got {len(runs)}')
    check_alike(runs)
    first = video_timeline(runs[0], video, class_name)
    return [first] + [video_timeline(run, first.video, first.class_name) for run in runs[1:]]


def _row_name(t: Timeline, timelines: Sequence[Timeline]) -> str:
    """The method's name; with the run's where two runs share a method."""
    alike = sum(other.method == t.method for other in timelines)
    return t.method if alike == 1 else f'{t.method} [{t.run}]'


def shown_detections(detections: np.ndarray, min_relative: float) -> np.ndarray:
    """The detections (D, 3) [start, end, score] scoring at least ``min_relative`` times the
    best one, in ascending score order (the best drawn last, on top)."""
    if not len(detections):
        return detections
    keep = detections[detections[:, 2] >= min_relative * detections[:, 2].max()]
    return keep[np.argsort(keep[:, 2], kind='stable')]


def _detection_bars(ax, t: Timeline, color: str, min_relative: float) -> None:
    """The detections as bars, more opaque for higher scores, with how many are shown."""
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    shown = shown_detections(t.detections, min_relative)
    if not len(shown):
        ax.text(0.5, 0.5, 'no detections', transform=ax.transAxes, ha='center', va='center',
                fontsize='small')
        return
    relative = shown[:, 2] / shown[:, 2].max()
    for (start, end, _), r in zip(shown, relative):
        alpha = 1.0 if min_relative >= 1 else 0.3 + 0.7 * (r - min_relative) / (1 - min_relative)
        ax.broken_barh([(start, end - start)], (0.1, 0.8), color=color, alpha=alpha, lw=0)
    ax.text(1.005, 0.5, f'{len(shown)} of {len(t.detections)}', transform=ax.transAxes,
            ha='left', va='center', fontsize='x-small')


def compare_figure(timelines: Sequence[Timeline], *, min_relative: float = 0.5):
    """Paper Fig. 4: per run a score axes and a detection strip, then the ground truth, all on
    one time axis in seconds. Row labels name each run's method; the axes titles its run, seed,
    step and video score. A strip shows the run's detections scoring at least ``min_relative``
    times its best (0: all), as bars, and how many of them that is."""
    ratios = [r for _ in timelines for r in (1.0, 0.32)] + [0.32]
    fig, axes = new_figure(len(ratios), 1, figsize=(10.0, 0.75 + 1.55 * sum(ratios)),
                           sharex=True, gridspec_kw={'height_ratios': ratios})
    axes = axes[:, 0]
    first = timelines[0]
    for i, t in enumerate(timelines):
        ax, bars, color = axes[2 * i], axes[2 * i + 1], RUN_COLORS[i % len(RUN_COLORS)]
        name = _row_name(t, timelines)
        mark_tail(ax, t)
        draw_curve(ax, t, t.score, color=color, lw=1.4)
        ax.fill_between(t.times[:t.measured], t.score[:t.measured], color=color, alpha=0.12,
                        lw=0)
        ax.set_ylim(*value_range(t.score[:t.measured]))
        ax.set_ylabel(f'{name}\nscore')
        note = '' if t.selected else ', not localised'
        ax.set_title(f'{name}: run {t.run}, seed {t.seed}, step {t.step}; video score '
                     f'{t.p_act:.2f}{note}', loc='left', fontsize='small')
        _detection_bars(bars, t, color, min_relative)
        bars.set_ylabel(f'{name}\ndetections', rotation=0, ha='right', va='center',
                        fontsize='small')
    draw_gt(axes[-1], first, legend={**OUTSIDE, 'fontsize': 'x-small'})
    axes[-1].set_ylabel('ground truth', rotation=0, ha='right', va='center', fontsize='small')
    axes[-1].set_xlabel('time (s)')
    axes[-1].set_xlim(0, max(t.end for t in timelines))
    fig.suptitle(f'{first.video}: {first.class_name}', fontsize='medium')
    shown = 'all detections' if min_relative <= 0 else \
        f"detections scoring at least {min_relative:.0%} of the run's best"
    fig.supxlabel(f'bars: {shown} (more opaque: higher score); hatched: the extrapolated '
                  'last segment', fontsize='x-small', color='0.35')
    return fig


def figure(runs: Sequence[RunView], video: str | None = None, class_name: str | None = None,
           **kwargs):
    """:func:`compare_figure` of :func:`compare_timelines`."""
    return compare_figure(compare_timelines(runs, video, class_name), **kwargs)
