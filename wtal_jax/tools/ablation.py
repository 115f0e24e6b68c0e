"""``wtal-jax ablate``: the paper's ablations (Table 3: losses and scores; Table 5: margin m).

Each setting of a study is one run directory ``WORKDIR/STUDY/SETTING`` that trains all its seeds
at once (``seeds``, vmapped) with :func:`wtal_jax.runs.loop.train_and_evaluate`; a run that
finished (its ``report.json`` is there, written last) is not trained again, and an interrupted
one resumes from its latest checkpoint. The study then writes ``WORKDIR/STUDY.json``,
``STUDY.md`` and ``STUDY.png``.

Three numbers per seed, all the test split's average mAP over the config's tIoU thresholds, from
the run's report (:mod:`wtal_jax.runs.summary`):

* **selected**: at the step chosen by ``checkpoint.select`` (by default the best step on the
  held-out selection split: no test-set selection);
* **last**: at the last step (``train.num_steps``), no selection at all;
* **best on test**: the best of the evaluations every ``eval.every_steps`` steps on the test
  split itself. That is model selection on the test set, as the authors' release does (it
  evaluates after every step); it is reported beside the other two, never instead of them.

Tables give mean ± sample standard deviation (ddof = 1) over seeds, and n.

Table 3 trains settings (a) and (b) identically (alpha = beta = 0): they differ only in how the
test scores are formed, so with the same seeds their networks are the same.
"""

import dataclasses
import json
import os
import time

import numpy as np

from wtal_jax import config as config_lib
from wtal_jax.errors import UserError
from wtal_jax.io_utils import write_json_atomic, write_text_atomic

# The three numbers of each seed: key of the run report, column title.
KINDS = (('selected', 'selected (selection split)'), ('last', 'last step'),
         ('test_selection', 'best on test (test-set selection)'))


@dataclasses.dataclass(frozen=True)
class Setting:
    """One row of a study: config overrides on top of the user's config and overrides."""
    key: str                     # folder name and short id, e.g. 'a' or 'm100'
    label: str                   # row label of the table
    overrides: tuple[str, ...]   # KEY=VALUE
    paper: str = ''              # the paper's THUMOS'14 average mAP (%) for this row (SPEC §7)
    derived: bool = False        # the paper gives it only through the text (shown as ≈)


STUDIES = {
    'table3': (
        # SPEC §7: 32.5 is the fused baseline (b); the softmax-only baseline is ≈ 22.6,
        # derived from the text ("fusion improves the average mAP by 9.9 %").
        Setting('a', '(a) baseline, softmax score', (
            'loss.alpha=0', 'loss.beta=0', 'localize.fuse_magnitude=False'), '22.6', True),
        Setting('b', '(b) baseline, fused score', (
            'loss.alpha=0', 'loss.beta=0', 'localize.fuse_magnitude=True'), '32.5'),
        Setting('c', '(c) + L_um', (
            'loss.alpha=5e-4', 'loss.beta=0', 'localize.fuse_magnitude=True'), '40.2'),
        Setting('d', '(d) + L_um + L_be (full)', (
            'loss.alpha=5e-4', 'loss.beta=1', 'localize.fuse_magnitude=True'), '41.9'),
    ),
    'table5': tuple(
        Setting(f'm{m}', f'm = {m}', (f'loss.margin={m}',), paper)
        for m, paper in ((10, '39.6'), (25, '41.1'), (50, '41.8'), (100, '41.9'),
                         (150, '41.7'), (200, '41.9'), (250, '41.6'))),
}


def select_settings(study: str, keys: str | None = None) -> tuple[Setting, ...]:
    """The settings of ``study``, or the comma-separated ``keys`` of it, in table order."""
    if study not in STUDIES:
        raise UserError(f'unknown study {study!r}: one of {", ".join(STUDIES)}')
    settings = STUDIES[study]
    if not keys:
        return settings
    wanted = [k.strip() for k in keys.split(',') if k.strip()]
    known = {s.key for s in settings}
    unknown = [k for k in wanted if k not in known]
    if unknown:
        raise UserError(f'{study} has no setting {", ".join(unknown)}; its settings are '
                        f'{", ".join(s.key for s in settings)}')
    return tuple(s for s in settings if s.key in wanted)


def run_config(config_path: str, overrides, setting: Setting, seeds: int):
    """The locked config of one setting: the file, then the user's overrides, then the
    setting's; ``seeds`` seeds from the config's seed on, trained at once."""
    cfg = config_lib.load_config(config_path, list(overrides))
    config_lib.apply_overrides(cfg, setting.overrides, source=f'setting {setting.key}')
    cfg.seeds = tuple(int(cfg.seed) + i for i in range(seeds))
    return cfg


def train_one(cfg, workdir: str, *, progress: bool) -> tuple[dict, bool]:
    """Trains (or resumes, or skips) one setting's run; returns (its report, whether it trained).

    A run directory trained with another config is refused rather than mixed into the table.
    """
    from wtal_jax.runs import loop
    from wtal_jax.runs.rundir import REPORT_FILE, RunDir, config_changes
    report_path = os.path.join(workdir, REPORT_FILE)
    if os.path.isdir(workdir) and RunDir(workdir).has_config():
        changed = config_changes(RunDir(workdir).read_config(), cfg)
        if changed:
            raise UserError(f'{workdir} was trained with another config ({", ".join(changed[:4])}'
                            '); remove it or pass another --workdir')
        if os.path.exists(report_path):
            with open(report_path) as f:
                return json.load(f), False
    return loop.train_and_evaluate(cfg, workdir, progress=progress), True


def _mean_std(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


def aggregate(setting: Setting, report: dict) -> dict:
    """One table row from a run's report: per-seed values, their mean and deviation (fractions)."""
    row = {'key': setting.key, 'label': setting.label, 'overrides': list(setting.overrides),
           'paper': setting.paper, 'derived': setting.derived, 'seeds': report['seeds'],
           'n': len(report['per_seed']), 'tiou_thresholds': report['tiou_thresholds']}
    for kind, _ in KINDS:
        values = [p[kind]['average_mAP'] for p in report['per_seed']]
        row[kind] = values
        row[f'{kind}_step'] = [p[kind]['step'] for p in report['per_seed']]
        row[f'{kind}_mean'], row[f'{kind}_std'] = _mean_std(values)
    return row


def format_markdown(table: dict) -> str:
    """The study as a markdown table, mAP in percent: mean ± std (n)."""
    def pm(mean, std, n):
        return f'{100 * mean:.1f} ± {100 * std:.1f}' if n > 1 else f'{100 * mean:.1f}'

    lines = [
        f"{table['study']}: average mAP (%) on {table['split']} over tIoU "
        f"{table['tiou_thresholds'][0]:g}:{table['tiou_thresholds'][-1]:g}, "
        f"{table['num_steps']} steps, mean ± std over seeds",
        '',
        '| setting | ' + ' | '.join(title for _, title in KINDS) + " | n | paper, THUMOS'14 |",
        '| --- | --- | --- | --- | --- | --- |',
    ]
    for row in table['rows']:
        cells = [pm(row[f'{k}_mean'], row[f'{k}_std'], row['n']) for k, _ in KINDS]
        paper = ('≈ ' if row.get('derived') else '') + (row['paper'] or '-')
        lines.append(f"| {row['label']} | {' | '.join(cells)} | {row['n']} | {paper} |")
    return '\n'.join(lines) + '\n'


def _paper_value(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def plot_table(table: dict):
    """Mean ± std of the three average mAPs per setting, and the paper's figure.

    The paper's THUMOS'14 numbers are on their own axis (right): compare orderings, not levels.
    """
    from wtal_jax.tools import plotting
    rows = table['rows']
    fig, axes = plotting.new_figure(1, 1, figsize=(1.3 * len(rows) + 3.5, 3.8))
    ax = axes[0, 0]
    x = np.arange(len(rows))
    for offset, key, marker, color, label in (
            (-0.12, 'selected', 'D', '#2ca02c', 'selected (selection split)'),
            (0.0, 'last', 's', '#1f77b4', 'last step'),
            (0.12, 'test_selection', 'o', '#d62728', 'best on test (test-set selection)')):
        ax.errorbar(x + offset, [100 * r[f'{key}_mean'] for r in rows],
                    yerr=[100 * r[f'{key}_std'] for r in rows], fmt=marker, color=color,
                    capsize=4, label=label)
    ax.set_xticks(x, [r['label'] for r in rows], rotation=20, ha='right', fontsize='small')
    ax.set_xlim(-0.5, len(rows) - 0.5)
    ax.set_ylabel('average mAP (%), this run')
    ax.set_title(f"{table['study']} on {os.path.basename(table['config'])} "
                 f"({table['num_steps']} steps, n = {rows[0]['n']} seeds)")
    paper = [_paper_value(r['paper']) for r in rows]
    handles, labels = ax.get_legend_handles_labels()
    if any(v is not None for v in paper):
        twin = ax.twinx()
        shown = [(i, v) for i, v in enumerate(paper) if v is not None]
        line, = twin.plot([i for i, _ in shown], [v for _, v in shown], 'x', ms=8, color='0.4',
                          label="paper (THUMOS'14, right axis)")
        twin.set_ylabel("paper's average mAP (%)")
        handles.append(line)
        labels.append(line.get_label())
    ax.legend(handles, labels, fontsize='small', loc='lower right')
    return fig


def run_study(study: str, *, config_path: str, overrides=(), seeds: int = 3,
              workdir: str = 'runs/ablate', settings: str | None = None,
              progress: bool = True, log=print) -> dict:
    """Trains every setting, its seeds at once (skipping finished runs), writes
    STUDY.json/.md/.png.

    Returns the table as written to ``STUDY.json`` (fractions, not percent).
    """
    if seeds < 1:
        raise UserError(f'--seeds must be at least 1, got {seeds}')
    chosen = select_settings(study, settings)
    varied = {o.split('=', 1)[0] for s in chosen for o in s.overrides}
    clash = [o for o in overrides if o.removeprefix('--').removeprefix('config.')
             .split('=', 1)[0] in varied]
    if clash:
        log(f'note: the study sets {", ".join(sorted(varied))} itself; your '
            f'{" ".join(clash)} is overridden per setting')
    rows, cfg = [], None
    for i, setting in enumerate(chosen, 1):
        cfg = run_config(config_path, overrides, setting, seeds)
        run_dir = os.path.join(workdir, study, setting.key)
        start = time.perf_counter()
        report, trained = train_one(cfg, run_dir, progress=progress)
        rows.append(aggregate(setting, report))
        how = f'{time.perf_counter() - start:.0f} s' if trained else 'done before, not retrained'
        log(f"[{i}/{len(chosen)}] {study} {setting.label}, {seeds} seeds: " + ', '.join(
            f"{title} {100 * rows[-1][f'{kind}_mean']:.1f}" for kind, title in KINDS)
            + f' ({how})')
    table = {
        'study': study, 'config': config_path, 'overrides': list(overrides), 'seeds': seeds,
        'split': cfg.data.test.subset, 'num_steps': cfg.train.num_steps,
        'eval_every_steps': cfg.eval.every_steps, 'select': cfg.checkpoint.select,
        'tiou_thresholds': list(cfg.eval.tiou_thresholds),
        'metric': 'average mAP (fraction) over tiou_thresholds on the test split; selected = at '
                  'the step checkpoint.select chose; last = at num_steps; test_selection = max '
                  'over evaluations every eval_every_steps on the test split (test-set selection)',
        'std': 'sample standard deviation over seeds (ddof=1); 0 for one seed',
        'rows': rows,
    }
    os.makedirs(workdir, exist_ok=True)
    base = os.path.join(workdir, study)
    write_json_atomic(base + '.json', table, indent=1)
    text = format_markdown(table)
    write_text_atomic(base + '.md', text)
    try:
        from wtal_jax.tools import plotting
        plotting.save_png(plot_table(table), base + '.png')
    except UserError as e:  # matplotlib missing: the table is still written
        log(f'note: no {base}.png ({e})')
    log(text)
    log(f'wrote {base}.json, {base}.md and {base}.png')
    return table

