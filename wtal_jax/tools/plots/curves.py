"""Training curves of one seed of a run: every loss its method logs, the evaluation mAPs, and
the step its selection rule chose."""

import os

import numpy as np

from wtal_jax.errors import UserError
from wtal_jax.tools.plots.canvas import COLORS, new_figure
from wtal_jax.tools.plots.run import run_label

# The loop's own keys of a training row; every other key is one of the method's losses.
NOT_LOSSES = ('step', 'split', 'seed', 'steps_per_second', 'learning_rate')
TOTAL = 'loss'  # the loss a method minimises (the seam's contract), drawn first


def loss_keys(train_rows: list[dict]) -> list[str]:
    """The loss names the training rows hold: the total first, then in order of appearance."""
    keys = dict.fromkeys(k for row in train_rows for k in row if k not in NOT_LOSSES)
    return sorted(keys, key=lambda k: k != TOTAL)


def _seed_rows(rows: list[dict], seed) -> list[dict]:
    return [r for r in rows if r.get('seed') == seed]


def selected_step(workdir: str, seed: int, rows: list[dict] | None = None) -> int | None:
    """The step a seed's report chose: ``report.json``'s ``per_seed[i]['selected']['step']``,
    else (a run still training) that of the run's ``checkpoint.select`` rule on the evaluation
    rows so far, as ``runs.summary`` computes it; None before any evaluation."""
    from wtal_jax import io_utils
    from wtal_jax.runs import summary
    from wtal_jax.runs.rundir import REPORT_FILE, RunDir
    path = os.path.join(workdir, REPORT_FILE)
    if os.path.exists(path):
        report = io_utils.read_json(path, what='a run report')
        try:
            entries = [p for p in report['per_seed'] if p['seed'] == seed]
            if entries:
                return int(entries[0]['selected']['step'])
        except (KeyError, TypeError, ValueError):
            raise UserError(f'{path}: not a run report (no per_seed[i].selected.step)') from None
    run = RunDir(workdir)
    cfg = run.read_config()
    rows = _seed_rows(run.read_metrics() if rows is None else rows, seed)
    test = cfg.data.test.subset
    steps = [r['step'] for r in rows if r.get('split') == test and 'average_mAP' in r]
    if not steps:
        return None
    try:
        report = summary.seed_report(rows, seed, select=cfg.checkpoint.select, test_split=test,
                                     selection_split='selection', num_steps=max(steps),
                                     metric=cfg.checkpoint.best_metric,
                                     mode=cfg.checkpoint.best_mode)
    except UserError:   # no selection evaluation yet: nothing chosen
        return None
    return int(report['selected']['step'])


def _mark(ax, step: int | None, label: str | None = None) -> None:
    if step is not None:
        ax.axvline(step, color=COLORS['selected'], ls='--', lw=1, label=label)


def _map_axes(ax, rows: list[dict], step: int | None) -> None:
    """The evaluation mAPs per tIoU, their average, and the selection split's average."""
    selection = [r for r in rows if r.get('split') == 'selection' and 'average_mAP' in r]
    evals = [r for r in rows if 'average_mAP' in r and r.get('split') != 'selection']
    if evals:
        steps = [r['step'] for r in evals]
        maps = np.array([r['mAP'] for r in evals]) * 100
        for j, t in enumerate(evals[-1]['tiou_thresholds']):
            ax.plot(steps, maps[:, j], lw=0.8, alpha=0.7, label=f'tIoU {t:g}')
        ax.plot(steps, [100 * r['average_mAP'] for r in evals], color='k', lw=2.2,
                marker='o', ms=3, label='average')
        if selection:
            ax.plot([r['step'] for r in selection], [100 * r['average_mAP'] for r in selection],
                    color='k', ls='--', lw=1.2, label='average, selection split')
    else:
        ax.text(0.5, 0.5, 'no evaluation yet', transform=ax.transAxes, ha='center')
    _mark(ax, step, None if step is None else f'selected step {step}')
    if evals or step is not None:
        ax.legend(fontsize='x-small', ncol=2)
    ax.set_title(f"detection mAP on {evals[-1]['split'] if evals else 'test'}")
    ax.set_xlabel('step')
    ax.set_ylabel('mAP (%)')


def curves_figure(rows_or_workdir, *, seed: int | None = None,
                  selected: int | None = None, title: str | None = None):
    """Every loss of the training rows and the evaluation mAPs (percent) against the step.

    Args:
      rows_or_workdir: a run directory, or the rows of its ``metrics.jsonl``.
      seed: which seed's rows (default: the first row's).
      selected: the step marked as selected; for a run directory, by default
        :func:`selected_step`'s.
      title: the figure's title; for a run directory, by default 'RUN, seed S'.
    Returns:
      Figure with one axes per loss (the total ``loss`` first) and one for the mAP, three
      columns wide.
    """
    rows = rows_or_workdir
    if isinstance(rows_or_workdir, (str, os.PathLike)):
        from wtal_jax.runs.rundir import METRICS_FILE, RunDir
        rows = RunDir(rows_or_workdir).read_metrics()
        if not rows:
            raise UserError(f'{rows_or_workdir}: no {METRICS_FILE} (a converted '
                            'checkpoint has no training curves)')
    seed = rows[0].get('seed') if seed is None and rows else seed  # several seeds: the first
    rows = _seed_rows(rows, seed)
    if isinstance(rows_or_workdir, (str, os.PathLike)):
        selected = selected_step(rows_or_workdir, seed, rows) if selected is None else selected
        title = title or f'training curves: {run_label(rows_or_workdir)}, seed {seed}'
    train = [r for r in rows if r.get('split') == 'train']
    keys = loss_keys(train)
    ncols = min(3, len(keys) + 1)
    nrows = -(-(len(keys) + 1) // ncols)
    fig, axes = new_figure(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows))
    for ax, key in zip(axes.flat, keys):
        ax.plot([r['step'] for r in train if key in r], [r[key] for r in train if key in r],
                lw=1.2)
        _mark(ax, selected)
        ax.set_title(key)
        ax.set_xlabel('step')
        ax.set_ylabel('loss')
    _map_axes(axes.flat[len(keys)], rows, selected)
    for ax in axes.flat[len(keys) + 1:]:
        fig.delaxes(ax)
    if title:
        fig.suptitle(title, fontsize='medium')
    return fig
