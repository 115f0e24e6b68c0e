"""``wtal-jax sweep``: a grid of config values, one run per point, one table, and each point
compared with the config's own values.

``--set KEY=V1,V2,...`` (repeatable) gives the values of one field; several ``--set`` give their
cross product, in the order given. Each value is parsed by the type of the field, exactly as
``--config.KEY=VALUE`` parses it (:func:`wtal_jax.config.apply_overrides`); for a field whose
value is itself a list (``eval.tiou_thresholds``, ``localize.score_thresholds``) the points are
separated by ``;`` instead, each a list as ``--config`` takes it (a text value cannot hold a
comma, the separator of the other fields' values)::

    --set loss.margin=10,25,50,100
    --set 'eval.tiou_thresholds=0.1:0.5:0.1;0.3,0.5,0.7'

Every point is one run directory, ``WORKDIR/KEY=VALUE[,KEY=VALUE...]`` (characters other than
letters, digits and ``._=+,-`` become ``-``), that trains all its seeds at once with
:func:`wtal_jax.runs.loop.train_and_evaluate`. A point whose ``report.json`` is there (written
last) and whose config is the point's is not trained again; an interrupted one resumes from its
latest checkpoint; a folder trained with another config is refused before anything is trained
or written. The point with the config's own values (the *default*) is trained too when the grid
lacks it, and every other point is compared with it, seed by seed
(:mod:`wtal_jax.tools.compare`).

The table gives three numbers per point, each the test split's average mAP over the config's
tIoU thresholds, mean ± sample standard deviation (ddof = 1) over the seeds:

* **selected**: at the step chosen by ``checkpoint.select`` (by default the best step on the
  held-out selection split: no test-set selection);
* **last**: at the last step (``train.num_steps``), no selection at all;
* **best on test**: the best of the evaluations on the test split itself (test-set selection,
  the authors' release protocol), reported beside the other two, never instead of them.

``wtal-jax ablate`` runs named sweeps (the paper's Tables 3 and 5) through the same functions
(:mod:`wtal_jax.tools.ablation`). Points are trained one after another, each point's seeds at
once: the swept values are statics of the compiled step (BENCHMARKS.md, "Sweeps").
"""

import dataclasses
import itertools
import json
import os
import re
import time

import ml_collections
import numpy as np

from wtal_jax import config as config_lib
from wtal_jax.errors import UserError
from wtal_jax.io_utils import write_json_atomic, write_text_atomic

# The three numbers of each seed: key of the run report, column title.
KINDS = (('selected', 'selected (selection split)'), ('last', 'last step'),
         ('test_selection', 'best on test (test-set selection)'))
# Separates the points of a list-valued field (a comma already separates a list's items).
LIST_SEPARATOR = ';'


@dataclasses.dataclass(frozen=True)
class Point:
    """One point of a sweep (a row of its table): config overrides on top of the user's config
    and overrides."""
    key: str                     # folder name and short id, e.g. 'loss.margin=10', 'a', 'm100'
    label: str                   # row label of the table
    overrides: tuple[str, ...]   # KEY=VALUE
    paper: str = ''              # the paper's THUMOS'14 average mAP (%) for this row (SPEC §7)
    derived: bool = False        # the paper gives it only through the text (shown as ≈)


# ---------------------------------------------------------------------------------------------
# The grid

def _copy(cfg):
    """A validated, locked copy of a config (through its JSON form, as config.json keeps it)."""
    return config_lib.from_dict(config_lib.to_dict(cfg), source='the sweep\'s config')


def _value(cfg, key: str):
    """The value of dotted field ``key`` of ``cfg`` (the key is known to exist)."""
    node = cfg
    for name in key.split('.'):
        node = node[name]
    return node


def _override(cfg, item: str, where: str) -> None:
    """``apply_overrides`` of one ``KEY=VALUE``, its errors said as ``--set`` errors."""
    try:
        config_lib.apply_overrides(cfg, [item], source=where)
    except UserError as e:
        raise UserError('--set ' + str(e).removeprefix('--config.')) from None


def _applied(base, overrides, where: str):
    """A copy of ``base`` with ``overrides`` (``KEY=VALUE`` texts) applied."""
    cfg = _copy(base)
    for item in overrides:
        _override(cfg, item, where)
    return cfg


def _label(values: dict) -> str:
    """A point's row label: 'KEY=VALUE, KEY=VALUE'."""
    return ', '.join(f'{k}={value_text(v)}' for k, v in values.items())


def value_text(value) -> str:
    """A parsed value as a point's name shows it: 10.0 -> '10', (0.1, 0.5) -> '0.1_0.5'."""
    if isinstance(value, (tuple, list)):
        return '_'.join(value_text(v) for v in value)
    if isinstance(value, float):
        return f'{value:g}'
    return str(value)


def folder_name(values: dict) -> str:
    """``KEY=VALUE[,KEY=VALUE...]``, with characters other than letters, digits and ``._=+,-``
    replaced by ``-`` (a point's run directory)."""
    text = ','.join(f'{k}={value_text(v)}' for k, v in values.items())
    return re.sub(r'[^A-Za-z0-9._=+,-]', '-', text)


def parse_set(text: str, base, where: str) -> tuple[str, list[str]]:
    """``KEY=V1,V2,...`` -> (KEY, the value texts), each checked to parse as the field's type
    (and to pass its rule) on a copy of ``base``. A list-valued field separates its values by
    ``;``."""
    if '=' not in text:
        raise UserError(f'--set {text}: expected KEY=V1,V2,...')
    key, values = (part.strip() for part in text.split('=', 1))
    key = key.removeprefix('--').removeprefix('config.')
    separator = LIST_SEPARATOR if isinstance(_field(base, key, where), (tuple, list)) else ','
    texts = [v.strip() for v in values.split(separator) if v.strip()]
    if not texts:
        raise UserError(f'--set {key}=: no values (give {key}=V1,V2,...)')
    for value in texts:
        _applied(base, [f'{key}={value}'], where)
    return key, texts


def _field(cfg, key: str, where: str):
    """The current value of field ``key``; an unknown key or a section refused in one line,
    with the nearest field's name where it looks like a typo (as ``--config`` says it)."""
    try:
        value = _value(cfg, key)
    except (KeyError, AttributeError, TypeError):
        _override(_copy(cfg), f'{key}=0', where)   # raises: no such field, did you mean ...
        raise UserError(f'--set {key}: no such field in {where}') from None
    if isinstance(value, ml_collections.ConfigDict):
        raise UserError(f'--set {key}: a section of {where}, not a field')
    return value


def grid_points(sets, base, where: str) -> list[Point]:
    """The cross product of ``--set`` texts, in the order given, as points named by their
    parsed values; refuses an empty grid, a key given twice and two values that are one."""
    if not sets:
        raise UserError('an empty grid: give at least one --set KEY=V1,V2,...')
    parsed = [parse_set(text, base, where) for text in sets]
    keys = [key for key, _ in parsed]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise UserError(f'--set {", ".join(twice)} given more than once: one --set per field')
    points, seen = [], {}
    for combination in itertools.product(*(values for _, values in parsed)):
        overrides = tuple(f'{k}={v}' for k, v in zip(keys, combination))
        cfg = _applied(base, overrides, where)
        values = {k: _value(cfg, k) for k in keys}
        name = folder_name(values)
        if name in seen:
            raise UserError(f'--set: {" ".join(seen[name])} and {" ".join(overrides)} are the '
                            f'same point ({name})')
        seen[name] = overrides
        points.append(Point(name, _label(values), overrides))
    return points


def default_point(points, base, where: str) -> tuple[Point, bool]:
    """(the point with the config's own values of every swept field, whether it is one of
    ``points``); a new point named as the grid names its points when none is."""
    keys = list(dict.fromkeys(o.split('=', 1)[0] for p in points for o in p.overrides))
    own = {k: _value(base, k) for k in keys}
    for point in points:
        cfg = _applied(base, point.overrides, where)
        if all(_value(cfg, k) == v for k, v in own.items()):
            return point, True
    return Point(folder_name(own), _label(own),
                 tuple(f'{k}={_json_text(v)}' for k, v in own.items())), False


def _json_text(value) -> str:
    """A value as an override text that parses back to it (lists as JSON)."""
    return json.dumps(list(value)) if isinstance(value, (tuple, list)) else str(value)


# ---------------------------------------------------------------------------------------------
# Training the points

def base_config(config_path: str, overrides=()):
    """The user's config, its data folder absolute (as a trained run saves it, so that a
    finished point is recognised from any working directory)."""
    cfg = config_lib.load_config(config_path, list(overrides))
    if cfg.data.root:
        cfg.data.root = os.path.abspath(cfg.data.root)
    return cfg


def point_config(base, point: Point, seeds) -> object:
    """The locked config of one point: the user's config, then the point's overrides;
    ``seeds``: a tuple, or a count N (the config's seed and the N − 1 after it)."""
    cfg = _applied(base, point.overrides, f'point {point.key}')
    if isinstance(seeds, int):
        seeds = tuple(int(cfg.seed) + i for i in range(seeds))
    cfg.seeds = tuple(seeds)
    return cfg


def check_run(cfg, workdir: str) -> bool:
    """Whether ``workdir`` holds this config's finished run; refuses (one line) a folder
    trained with another config."""
    from wtal_jax.runs.rundir import REPORT_FILE, RunDir, config_changes
    if not (os.path.isdir(workdir) and RunDir(workdir).has_config()):
        return False
    changed = config_changes(RunDir(workdir).read_config(), cfg)
    if changed:
        raise UserError(f'{workdir} was trained with another config ({", ".join(changed[:4])}'
                        '); remove it or pass another --workdir')
    return os.path.exists(os.path.join(workdir, REPORT_FILE))


def train_one(cfg, workdir: str, *, progress: bool) -> tuple[dict, bool]:
    """Trains (or resumes, or skips) one point's run; returns (its report, whether it trained).

    A run directory trained with another config is refused rather than mixed into the table.
    """
    from wtal_jax.runs import loop
    from wtal_jax.runs.rundir import REPORT_FILE
    if check_run(cfg, workdir):
        with open(os.path.join(workdir, REPORT_FILE)) as f:
            return json.load(f), False
    return loop.train_and_evaluate(cfg, workdir, progress=progress), True


# ---------------------------------------------------------------------------------------------
# The table

def _mean_std(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


def aggregate(point: Point, report: dict) -> dict:
    """One table row from a run's report: per-seed values, their mean and deviation (fractions)."""
    row = {'key': point.key, 'label': point.label, 'overrides': list(point.overrides),
           'paper': point.paper, 'derived': point.derived, 'seeds': report['seeds'],
           'n': len(report['per_seed']), 'tiou_thresholds': report['tiou_thresholds']}
    for kind, _ in KINDS:
        values = [p[kind]['average_mAP'] for p in report['per_seed']]
        row[kind] = values
        row[f'{kind}_step'] = [p[kind]['step'] for p in report['per_seed']]
        row[f'{kind}_mean'], row[f'{kind}_std'] = _mean_std(values)
    return row


def _pm(mean: float, std: float, n: int) -> str:
    return f'{100 * mean:.1f} ± {100 * std:.1f}' if n > 1 else f'{100 * mean:.1f}'


def format_markdown(table: dict) -> str:
    """The sweep as a markdown table, mAP in percent: mean ± std; the paper's column where a
    row has the paper's number; then each point against the default, where compared."""
    paper = any(row.get('paper') for row in table['rows'])
    lines = [
        f"{table['study']}: average mAP (%) on {table['split']} over tIoU "
        f"{table['tiou_thresholds'][0]:g}:{table['tiou_thresholds'][-1]:g}, "
        f"{table['num_steps']} steps, mean ± std over seeds",
        '',
        '| setting | ' + ' | '.join(title for _, title in KINDS) + ' | n |'
        + (" paper, THUMOS'14 |" if paper else ''),
        '| --- | --- | --- | --- | --- |' + (' --- |' if paper else ''),
    ]
    for row in table['rows']:
        cells = [_pm(row[f'{k}_mean'], row[f'{k}_std'], row['n']) for k, _ in KINDS]
        line = f"| {row['label']} | {' | '.join(cells)} | {row['n']} |"
        if paper:
            line += f" {('≈ ' if row.get('derived') else '') + (row['paper'] or '-')} |"
        lines.append(line)
    if table.get('default'):
        lines += ['', f"The default (the config's own values): {table['default_label']}."]
    if table.get('verdicts'):
        lines += ['', 'Each setting against the default, selected column, paired seeds '
                      '(wtal-jax compare):', '']
        lines += [f'- {text}' for _, text in table['verdicts']]
    return '\n'.join(lines) + '\n'


def _paper_value(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def plot_table(table: dict):
    """Mean ± std of the three average mAPs per point, and the paper's figure where known.

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
    ax.set_xticks(x, [r['label'] + (' *' if r['key'] == table.get('default') else '')
                      for r in rows], rotation=20, ha='right', fontsize='small')
    ax.set_xlim(-0.5, len(rows) - 0.5)
    ax.set_ylabel('average mAP (%), this run')
    ax.set_title(f"{table['study']} on {os.path.basename(table['config'])} "
                 f"({table['num_steps']} steps, n = {rows[0]['n']} seeds"
                 + ('; * the default' if table.get('default') else '') + ')')
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
    ax.legend(handles, labels, fontsize='small', loc='best')
    return fig


def compare_with_default(runs: dict, default: Point, points) -> tuple[list, list]:
    """Each point's run against the default's (``runs``: point key -> run folder): the
    comparisons (:class:`compare.Comparison`) and (label, verdict on the selected column's
    own average) per point."""
    from wtal_jax.tools import compare
    base = compare.load_run(runs[default.key])
    comparisons, verdicts = [], []
    for point in points:
        if point.key == default.key:
            continue
        other = compare.load_run(runs[point.key])
        compare.check_alike(base, other)
        c = compare.compare_pair(base, other)
        comparisons.append(c)
        verdicts.append((point.label, compare.verdict(c.columns['selected'][c.main],
                                                      'default', point.label)))
    return comparisons, verdicts


# ---------------------------------------------------------------------------------------------
# The whole sweep

def run_sweep(points, *, name: str, config_path: str, overrides=(), seeds=3, runs_dir: str,
              out_base: str, add_default: bool = True, progress: bool = True,
              log=print) -> dict:
    """Trains every point, its seeds at once (skipping finished runs), compares each with the
    default point, writes ``OUT_BASE.json``, ``.md`` and ``.png``.

    Args:
      points: the rows, in table order; each point's run is ``RUNS_DIR/POINT.key``.
      name: the sweep's name in its table ('sweep', 'table3', ...).
      seeds: a tuple of seeds, or a count N (the config's seed and the N − 1 after it).
      add_default: train the point with the config's own values when ``points`` lack it
        (first row); otherwise compare only where one of ``points`` is the default.
    Returns the table as written to ``OUT_BASE.json`` (fractions, not percent).
    """
    if isinstance(seeds, int) and seeds < 1:
        raise UserError(f'--seeds must be at least 1, got {seeds}')
    base = base_config(config_path, overrides)
    default, in_grid = default_point(points, base, config_path)
    points = list(points) if in_grid or not add_default else [default, *points]
    if not in_grid and not add_default:
        default = None
    configs = {p.key: point_config(base, p, seeds) for p in points}
    runs = {p.key: os.path.join(runs_dir, p.key) for p in points}
    for p in points:   # every refusal before anything is trained or written
        check_run(configs[p.key], runs[p.key])
    rows = []
    for i, point in enumerate(points, 1):
        start = time.perf_counter()
        report, trained = train_one(configs[point.key], runs[point.key], progress=progress)
        rows.append(aggregate(point, report))
        how = f'{time.perf_counter() - start:.0f} s' if trained else 'done before, not retrained'
        log(f"[{i}/{len(points)}] {name} {point.label}, {len(report['seeds'])} seeds: "
            + ', '.join(f"{title} {100 * rows[-1][f'{kind}_mean']:.1f}"
                        for kind, title in KINDS) + f' ({how})')
    comparisons, verdicts = compare_with_default(runs, default, points) if default else ([], [])
    cfg = configs[points[0].key]
    table = {
        'study': name, 'config': config_path, 'overrides': list(overrides),
        'seeds': len(config_lib.run_seeds(cfg)), 'split': cfg.data.test.subset,
        'num_steps': cfg.train.num_steps, 'eval_every_steps': cfg.eval.every_steps,
        'select': cfg.checkpoint.select, 'tiou_thresholds': list(cfg.eval.tiou_thresholds),
        'metric': 'average mAP (fraction) over tiou_thresholds on the test split; selected = at '
                  'the step checkpoint.select chose; last = at num_steps; test_selection = max '
                  'over evaluations every eval_every_steps on the test split (test-set selection)',
        'std': 'sample standard deviation over seeds (ddof=1); 0 for one seed',
        'rows': rows,
        'default': default.key if default else None,
        'default_label': default.label if default else None,
        'verdicts': verdicts,
    }
    if comparisons:
        from wtal_jax.tools import compare
        table['comparisons'] = compare.to_json(comparisons)['comparisons']
    _write_outputs(table, out_base, log)
    return table


def _write_outputs(table: dict, out_base: str, log) -> None:
    """``OUT_BASE.json``, ``.md`` and ``.png`` (no PNG without matplotlib, said)."""
    os.makedirs(os.path.dirname(os.path.abspath(out_base)), exist_ok=True)
    write_json_atomic(out_base + '.json', table, indent=1)
    text = format_markdown(table)
    write_text_atomic(out_base + '.md', text)
    try:
        from wtal_jax.tools import plotting
        plotting.save_png(plot_table(table), out_base + '.png')
    except UserError as e:  # matplotlib missing: the table is still written
        log(f'note: no {out_base}.png ({e})')
    log(text)
    log(f'wrote {out_base}.json, {out_base}.md and {out_base}.png')


def sweep(sets, *, config_path: str, overrides=(), seeds=3, workdir: str,
          progress: bool = True, log=print) -> dict:
    """``wtal-jax sweep``: the grid of ``sets`` (``KEY=V1,V2,...`` texts) in ``WORKDIR/POINT``,
    the default point added when missing; tables ``WORKDIR/sweep.{json,md,png}``."""
    base = base_config(config_path, overrides)
    points = grid_points(sets, base, config_path)
    return run_sweep(points, name='sweep', config_path=config_path, overrides=overrides,
                     seeds=seeds, runs_dir=workdir, out_base=os.path.join(workdir, 'sweep'),
                     progress=progress, log=log)
