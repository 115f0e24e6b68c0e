"""Figures of runs (``[viz]`` extra): the public face of ``wtal_jax.tools.plots`` (one module
per figure), and the writers of ``wtal-jax plot``.

* :func:`magnitude_figure`: histograms of the feature magnitude ``||f_t||`` of action and
  background segments of the test split, before and after training -- the paper's Fig. 2; for
  methods whose outputs hold ``magnitudes``.
* :func:`timeline_figure`: one video and class of one run: its segment score, each shared
  sequence with its thresholds, proposals and detections, the ground truth, in seconds.
* :func:`compare_figure`: one video and class of several runs on one time axis, each run's
  scores and detections above the ground truth -- the paper's Fig. 4.
* :func:`curves_figure`: every loss the method logs and the evaluation mAPs, the selected step
  marked.

Figures are built on the Agg canvas directly (no ``pyplot``): a notebook displays them as any
figure. The data come from :func:`load_run`, which loads a run directory (or a
``checkpoints/STEP`` folder, or a converted checkpoint) with its test split once. Titles name a
run by its folder's name and seed, never by an absolute path.
"""

import os
import sys
from collections.abc import Sequence

from wtal_jax.errors import UserError
from wtal_jax.tools.plots import compare, magnitudes, timeline
from wtal_jax.tools.plots.canvas import figure_texts, new_figure, require_matplotlib, \
    safe_name, save_png
from wtal_jax.tools.plots.compare import check_alike, compare_figure, compare_timelines
from wtal_jax.tools.plots.curves import curves_figure, loss_keys, selected_step
from wtal_jax.tools.plots.magnitudes import action_mask, magnitude_figure, \
    plot_magnitude_histograms, segment_magnitudes
from wtal_jax.tools.plots.run import RunView, load_run, run_label
from wtal_jax.tools.plots.timeline import Timeline, plot_timeline, timeline_figure, \
    video_timeline

__all__ = ['RunView', 'Timeline', 'action_mask', 'check_alike', 'compare_figure',
           'compare_timelines', 'curves_figure', 'figure_texts', 'load_run', 'loss_keys',
           'magnitude_figure', 'new_figure', 'plot_magnitude_histograms', 'plot_timeline',
           'require_matplotlib', 'run_label', 'save_png', 'segment_magnitudes', 'selected_step',
           'timeline_figure', 'video_timeline', 'write_compare', 'write_figures']


def _write_all(figures: dict, out: str) -> list[str]:
    """Writes ``{file name: Figure}`` into the folder ``out`` (created if missing)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f'{out}: exists and is not a folder; --out takes a folder')
    os.makedirs(out, exist_ok=True)
    return [save_png(fig, os.path.join(out, file)) for file, fig in figures.items()]


def write_figures(run: RunView, out: str, *, video: str | None = None,
                  class_name: str | None = None, note=None) -> list[str]:
    """Writes ``magnitudes_seedS.png`` (where the outputs hold magnitudes),
    ``timeline_VIDEO_CLASS_seedS.png`` and ``curves_seedS.png`` (where metrics exist) into
    ``out`` (created if missing); returns their paths. ``note(text)`` receives one line per
    figure left out (default: standard error).

    Every figure is drawn before the first is written, so that an unknown video or class (or
    any other failure) leaves the figures already in ``out`` as they were.
    """
    note = note or (lambda text: print(text, file=sys.stderr))
    seed = f'seed{run.seed}'
    line = timeline.video_timeline(run, video, class_name)  # checks the video and class names
    figures = {}
    if run.has_output(magnitudes.OUTPUT):
        figures[f'magnitudes_{seed}.png'] = magnitude_figure(run)
    else:
        note(f'note: {run.label}: method {run.method_name} gives no feature magnitudes: no '
             f'magnitudes_{seed}.png')
    figures[f'timeline_{safe_name(line.video)}_{safe_name(line.class_name)}_{seed}.png'] = \
        plot_timeline(line)
    from wtal_jax.runs.rundir import METRICS_FILE, RunDir
    rows = [r for r in RunDir(run.workdir).read_metrics() if r.get('seed', run.seed) == run.seed]
    if rows:
        figures[f'curves_{seed}.png'] = curves_figure(
            rows, seed=run.seed, selected=selected_step(run.workdir, run.seed, rows),
            title=f'training curves: {run.label}, seed {run.seed}')
    else:
        note(f'note: {run.label} has no {METRICS_FILE}: no curves_{seed}.png')
    return _write_all(figures, out)


def write_compare(runs: Sequence[RunView], out: str, *, video: str | None = None,
                  class_name: str | None = None) -> str:
    """Writes ``compare_VIDEO_CLASS_seedS.png`` (S: the runs' seeds, '-'-joined where they
    differ) into ``out``: the paper's Fig. 4 of the runs; returns its path. Nothing is written
    where the runs differ in split or classes or the video or class is unknown."""
    lines = compare.compare_timelines(runs, video, class_name)
    seeds = '-'.join(dict.fromkeys(str(run.seed) for run in runs))
    name = f'compare_{safe_name(lines[0].video)}_{safe_name(lines[0].class_name)}_seed{seeds}.png'
    return _write_all({name: compare_figure(lines)}, out)[0]
