"""``wtal-jax ablate``: the paper's ablations (Table 3: losses and scores; Table 5: margin m).

Each setting of a study is trained for every seed with :func:`experiment.train_and_evaluate`
in its own run directory ``WORKDIR/STUDY/SETTING/seed_N``; a run that finished (its
``result.json`` is there, written last) is not trained again, and an interrupted one resumes
from its latest checkpoint. The study then writes ``WORKDIR/STUDY.json``, ``STUDY.md`` and
``STUDY.png``.

Two numbers per run, both the average mAP over the config's tIoU thresholds on ``eval.split``:

* **final**: at the last step (``train.num_steps``), no model selection;
* **best**: the best of the evaluations every ``eval.every_steps`` steps. That is model selection
  on the test set, as the authors' release does (it evaluates after every step); it is reported
  beside the final figure, never instead of it.

Tables give mean ± sample standard deviation (ddof = 1) over seeds, and n.

Table 3 trains settings (a) and (b) identically (alpha = beta = 0): they differ only in how the
test scores are formed, so with the same seed their networks are the same.
"""

import dataclasses
import json
import os
import time

import numpy as np

from wtal_jax import config as config_lib
from wtal_jax.errors import UserError
from wtal_jax.io_utils import write_json_atomic, write_text_atomic

RESULT_FILE = 'result.json'
# ``experiment`` and ``checkpointing`` (JAX, orbax) are imported where used, so that the tables
# can be read, formatted and plotted without them.


@dataclasses.dataclass(frozen=True)
class Setting:
    """One row of a study: config overrides on top of the user's config and overrides."""
    key: str                     # folder name and short id, e.g. 'a' or 'm100'
    label: str                   # row label of the table
    overrides: tuple[str, ...]   # KEY=VALUE
    paper: str = ''              # the paper's THUMOS'14 average mAP (%) for this row (SPEC §7)


STUDIES = {
    'table3': (
        Setting('a', '(a) baseline, softmax score', (
            'loss.alpha=0', 'loss.beta=0', 'localize.fuse_magnitude=False'), '32.5'),
        # SPEC §7 words (b) as "9.9 points higher" than (a); the figure is kept as worded.
        Setting('b', '(b) baseline, fused score', (
            'loss.alpha=0', 'loss.beta=0', 'localize.fuse_magnitude=True'), '(a) + 9.9'),
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


def run_config(config_path: str, overrides, setting: Setting, seed: int):
    """The locked config of one run: the file, then the user's overrides, then the setting's,
    then ``seed`` (added to the config's seed)."""
    cfg = config_lib.load_config(config_path, list(overrides))
    config_lib.apply_overrides(cfg, setting.overrides, source=f'setting {setting.key}')
    cfg.seed = int(cfg.seed) + seed
    return cfg


def run_summary(workdir: str, cfg) -> dict:
    """Final-step and best evaluation of a finished run, from its ``metrics.jsonl``."""
    from wtal_jax.runs.rundir import METRICS_FILE, RunDir
    evals = [r for r in RunDir(workdir).read_metrics()
             if r.get('split') == cfg.data.test.subset]
    final = [r for r in evals if r['step'] == cfg.train.num_steps]
    if not final:
        raise UserError(f'{workdir}: no evaluation at the last step {cfg.train.num_steps} in '
                        f'{METRICS_FILE}')
    best = max(evals, key=lambda r: r['average_mAP'])  # the first of equal ones
    return {'final': final[-1]['average_mAP'], 'final_mAP': final[-1]['mAP'],
            'best': best['average_mAP'], 'best_step': best['step'], 'best_mAP': best['mAP'],
            'tiou_thresholds': final[-1]['tiou_thresholds'],
            'evaluated_steps': [r['step'] for r in evals]}


def _changed_keys(saved: dict, wanted: dict, prefix: str = '') -> list[str]:
    keys = []
    for k in sorted(set(saved) | set(wanted)):
        a, b = saved.get(k), wanted.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _changed_keys(a, b, f'{prefix}{k}.')
        elif a != b:
            keys.append(prefix + k)
    return keys


def train_one(cfg, workdir: str, *, progress: bool) -> tuple[dict, bool]:
    """Trains (or resumes, or skips) one run; returns (its summary, whether it trained).

    A run directory trained with another config is refused rather than mixed into the table.
    """
    from wtal_jax.runs import loop
    from wtal_jax.runs.rundir import RunDir
    wanted = config_lib.to_dict(cfg)
    result_path = os.path.join(workdir, RESULT_FILE)
    if os.path.isdir(workdir) and RunDir(workdir).has_config():
        saved = config_lib.to_dict(RunDir(workdir).read_config())
        changed = _changed_keys(saved, wanted)
        if changed:
            raise UserError(f'{workdir} was trained with another config (differs in '
                            f'{", ".join(changed[:6])}); remove it or pass another --workdir')
        if os.path.exists(result_path):
            with open(result_path) as f:
                return json.load(f)['summary'], False
    loop.train_and_evaluate(cfg, workdir, progress=progress)
    summary = run_summary(workdir, cfg)
    write_json_atomic(result_path, {'summary': summary, 'config': wanted}, indent=1)
    return summary, True


def _mean_std(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


def aggregate(setting: Setting, seeds, summaries: list[dict]) -> dict:
    """One table row: per-seed values and their mean and standard deviation (fractions)."""
    final_mean, final_std = _mean_std([s['final'] for s in summaries])
    best_mean, best_std = _mean_std([s['best'] for s in summaries])
    return {
        'key': setting.key, 'label': setting.label, 'overrides': list(setting.overrides),
        'paper': setting.paper, 'seeds': list(seeds), 'n': len(summaries),
        'final': [s['final'] for s in summaries], 'best': [s['best'] for s in summaries],
        'best_step': [s['best_step'] for s in summaries],
        'final_mean': final_mean, 'final_std': final_std,
        'best_mean': best_mean, 'best_std': best_std,
        'final_mAP_mean': np.mean([s['final_mAP'] for s in summaries], axis=0).tolist(),
        'tiou_thresholds': summaries[0]['tiou_thresholds'],
    }


def format_markdown(table: dict) -> str:
    """The study as a markdown table, mAP in percent: mean ± std (n)."""
    def pm(mean, std, n):
        return f'{100 * mean:.1f} ± {100 * std:.1f}' if n > 1 else f'{100 * mean:.1f}'

    lines = [
        f"{table['study']}: average mAP (%) on {table['split']} over tIoU "
        f"{table['tiou_thresholds'][0]:g}:{table['tiou_thresholds'][-1]:g}, "
        f"{table['num_steps']} steps, mean ± std over seeds",
        '',
        '| setting | final step | best step (test-set selection) | n | paper, THUMOS\'14 |',
        '| --- | --- | --- | --- | --- |',
    ]
    for row in table['rows']:
        lines.append(f"| {row['label']} | {pm(row['final_mean'], row['final_std'], row['n'])} | "
                     f"{pm(row['best_mean'], row['best_std'], row['n'])} | {row['n']} | "
                     f"{row['paper'] or '-'} |")
    return '\n'.join(lines) + '\n'


def _paper_value(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def plot_table(table: dict):
    """Mean ± std of the final and best average mAP per setting, and the paper's figure.

    The paper's THUMOS'14 numbers are on their own axis (right): compare orderings, not levels.
    """
    from wtal_jax.tools import plotting
    rows = table['rows']
    fig, axes = plotting.new_figure(1, 1, figsize=(1.3 * len(rows) + 3.5, 3.8))
    ax = axes[0, 0]
    x = np.arange(len(rows))
    for offset, key, marker, color, label in (
            (-0.08, 'final', 's', '#1f77b4', 'final step'),
            (0.08, 'best', 'o', '#d62728', 'best step (test-set selection)')):
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
    """Trains every setting x seed (skipping finished runs), writes STUDY.json/.md/.png.

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
    jobs = [(s, seed) for s in chosen for seed in range(seeds)]
    summaries = {s.key: [] for s in chosen}
    cfg = None
    for i, (setting, seed) in enumerate(jobs, 1):
        cfg = run_config(config_path, overrides, setting, seed)
        run_dir = os.path.join(workdir, study, setting.key, f'seed_{seed}')
        start = time.perf_counter()
        summary, trained = train_one(cfg, run_dir, progress=progress)
        summaries[setting.key].append(summary)
        how = f'{time.perf_counter() - start:.0f} s' if trained else 'done before, not retrained'
        log(f"[{i}/{len(jobs)}] {study} {setting.label}, seed {seed}: final "
            f"{100 * summary['final']:.1f}, best {100 * summary['best']:.1f} at step "
            f"{summary['best_step']} ({how})")
    table = {
        'study': study, 'config': config_path, 'overrides': list(overrides), 'seeds': seeds,
        'split': cfg.data.test.subset, 'num_steps': cfg.train.num_steps,
        'eval_every_steps': cfg.eval.every_steps,
        'tiou_thresholds': list(cfg.eval.tiou_thresholds),
        'metric': 'average mAP (fraction) over tiou_thresholds; final = at num_steps; best = '
                  'max over evaluations every eval_every_steps (selection on the eval split)',
        'std': 'sample standard deviation over seeds (ddof=1); 0 for one seed',
        'rows': [aggregate(s, range(seeds), summaries[s.key]) for s in chosen],
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

