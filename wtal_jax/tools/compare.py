"""Is run B better than run A, beyond seed noise? (``wtal-jax compare``).

Two runs trained with the same seed numbers are paired seed by seed: for every column of the
run report (``selected``, ``last``, ``best_on_test`` ← the report's ``test_selection``) and every
protocol average (the run's own ``average_mAP``, named by its tIoU range, and each of the
report's ``averages``), the per-seed differences d_i = B_i − A_i give:

* their mean and a 95% confidence interval, mean ± t_{0.975, n−1} · sd / √n (Student's t, sd the
  sample standard deviation, ddof = 1). One pair has no spread, so no interval: it is
  (−inf, +inf), shown as ``n/a`` and written to JSON as ``[null, null]``. Zero spread (every
  d_i equal) gives a zero-width interval at the mean;
* an exact two-sided paired sign-flip p-value: the share of the 2^n assignments of signs to the
  d_i whose |mean| is at least the observed |mean|, the observed assignment included (so
  p >= 2/2^n for n >= 1 with a nonzero mean, and p = 1 for n = 1 or all d_i = 0).

Figures are fractions, as in the report; text shows percentage points (×100). NumPy and SciPy
only (no JAX).
"""

import math
import os
from typing import NamedTuple

import numpy as np
from scipy import stats

from wtal_jax.data.annotations import read_json
from wtal_jax.errors import UserError
from wtal_jax.postprocess import eval_files, report as report_lib, tables

# Column of the output -> key of each seed's entry in report.json, and its title in the table.
COLUMNS = {'selected': ('selected', 'selected'), 'last': ('last', 'last step'),
           'best_on_test': ('test_selection', 'best test*')}
# The exact test enumerates 2^n sums (8 MB of float64 at n = 20); beyond, a sampled test would
# be needed, and so many paired seeds are rare enough to refuse.
MAX_SEEDS = 20
# Sign assignments whose |sum| is within this fraction of sum(|d_i|) below the observed |sum|
# count as ties (as extreme): sums of the same numbers in another order differ by rounding.
TIE_RTOL = 1e-9
RESOLVE = 0.01    # the difference "about N seeds would resolve": 1 percentage point


class Paired(NamedTuple):
    """One paired comparison of B against A over n shared seeds (fractions).

    Attributes:
      n: number of pairs; seeds, a, b, deltas: (n,) each, deltas = b − a, in the order of seeds.
      mean_delta: mean of deltas; sd: their sample sd (ddof = 1), NaN for n = 1.
      ci95: (low, high), the 95% Student's t interval; (−inf, +inf) for n = 1.
      p_value: exact two-sided sign-flip p-value.
    """
    n: int
    seeds: tuple
    a: tuple
    b: tuple
    deltas: tuple
    mean_delta: float
    sd: float
    ci95: tuple
    p_value: float


def t_quantile(df: int) -> float:
    """t_{0.975, df}: the two-sided 95% quantile of Student's t with ``df`` degrees of freedom."""
    return float(stats.t.ppf(0.975, df))


def sign_flip_p(deltas) -> float:
    """Exact two-sided sign-flip p-value of deltas (n,), n <= MAX_SEEDS (see module docstring)."""
    d = np.asarray(deltas, np.float64)
    if d.size > MAX_SEEDS:
        raise UserError(f'{d.size} paired seeds: the exact sign-flip test enumerates 2^n sign '
                        f'assignments and takes at most {MAX_SEEDS} seeds')
    sums = np.zeros(1)
    for value in d:   # every ± combination of the values so far: 2^k sums after k values
        sums = np.concatenate([sums + value, sums - value])
    tolerance = TIE_RTOL * np.abs(d).sum()
    return float(np.count_nonzero(np.abs(sums) >= abs(d.sum()) - tolerance) / sums.size)


def paired(seeds, a, b) -> Paired:
    """The paired comparison of per-seed values ``b`` against ``a`` (each (n,), n >= 1)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    deltas = b - a
    n, mean = deltas.size, float(deltas.mean())
    if n == 1:
        sd, ci = math.nan, (-math.inf, math.inf)
    else:
        sd = float(deltas.std(ddof=1))
        half = t_quantile(n - 1) * sd / math.sqrt(n)
        ci = (mean - half, mean + half)
    return Paired(n, tuple(int(s) for s in seeds), tuple(a.tolist()), tuple(b.tolist()),
                  tuple(deltas.tolist()), mean, sd, ci, sign_flip_p(deltas))


def seeds_to_resolve(sd: float, difference: float = RESOLVE) -> int | None:
    """The smallest n >= 2 with t_{0.975, n−1} · sd / √n < ``difference``: the seeds whose 95%
    interval would be narrower than ± ``difference`` at this spread of the paired differences.

    2 at zero spread (any n >= 2 does); None (unknown) when sd is NaN (one pair has no spread).
    """
    if math.isnan(sd):
        return None
    if sd == 0:
        return 2
    # t_{0.975, n−1} <= t_{0.975, 2} for n >= 3, so this n satisfies the inequality: search below.
    upper = max(3, math.floor((t_quantile(2) * sd / difference) ** 2) + 1)
    ns = np.arange(2, upper + 1)
    half = stats.t.ppf(0.975, ns - 1) * sd / np.sqrt(ns)
    return int(ns[np.argmax(half < difference)])


def _points(x: float) -> str:
    return f'{100 * x:+.1f}'


def _judgement(p: Paired, a: str, b: str) -> str:
    """What the 95% interval and the sign-flip test allow one to say (n >= 2)."""
    smallest = 2 / 2 ** p.n   # the sign-flip test's smallest p at n pairs
    if p.ci95[0] <= 0 <= p.ci95[1]:
        say = 'not distinguishable from seed noise'
        return say + (' by the t interval, though the sign-flip test gives p <= 0.05'
                      if p.p_value <= 0.05 else '')
    say = f'{b} is {"better" if p.mean_delta > 0 else "worse"} than {a} beyond seed noise'
    if smallest > 0.05:
        return say + (f' by the t interval, though the sign-flip test cannot confirm it at '
                      f'n = {p.n} (its smallest p is {smallest:.3g})')
    return say + (' by the t interval, though the sign-flip test does not confirm it'
                  if p.p_value > 0.05 else '')


def verdict(p: Paired, a: str = 'A', b: str = 'B') -> str:
    """One sentence: the difference, its interval, n and p, and what they allow one to say.

    Distinguishable means the 95% interval excludes 0; where the sign-flip test disagrees
    (it cannot reach 0.05 below 6 pairs: its smallest p is 2/2^n), the sentence says so.
    """
    ci = 'n/a' if p.n == 1 else f'[{_points(p.ci95[0])}, {_points(p.ci95[1])}]'
    head = (f'{b} − {a} = {_points(p.mean_delta)} points, 95% CI {ci}, n = {p.n}, '
            f'p = {p.p_value:.3g}: ')
    if not any(p.deltas):
        return head + f'{b} and {a} are identical on every paired seed'
    if p.n == 1:
        return head + ('one paired seed cannot tell a difference from seed noise; how many '
                       'seeds would resolve a 1-point difference is unknown (no spread yet)')
    tail = ('; at zero spread any n >= 2 seeds would resolve a 1-point difference' if p.sd == 0
            else f'; about {seeds_to_resolve(p.sd)} seeds would resolve a 1-point difference '
                 'at this spread')
    return head + _judgement(p, a, b) + tail


# ---------------------------------------------------------------------------------------------
# Reading and pairing runs

class Run(NamedTuple):
    """A run's report.json, its class list (None: unknown) and tIoU thresholds (K,)."""
    path: str
    report: dict
    class_names: tuple | None
    thresholds: np.ndarray


def range_name(thresholds) -> str:
    """The name the protocol report gives an average over ``thresholds`` (e.g. '0.1:0.7'); a
    set that is none of its ranges is named as a list, '0.3,0.5'."""
    t = np.asarray(thresholds, np.float64)
    for ranges in report_lib.AVERAGE_RANGES.values():
        for name, spec in ranges.items():
            r = eval_files.parse_tiou_thresholds(spec)
            if r.shape == t.shape and np.allclose(r, t, rtol=0, atol=1e-9):
                return name
    return ','.join(f'{x:g}' for x in t)


def _class_names(path: str, report: dict) -> tuple | None:
    """The report's class list, else the non-empty ``data.class_names`` of config.json."""
    if 'class_names' in report:
        return tuple(report['class_names'])
    config = os.path.join(path, 'config.json')
    try:
        names = read_json(config)['data']['class_names'] if os.path.exists(config) else None
    except (KeyError, TypeError):   # not a config of ours: no list to check against
        names = None
    return tuple(names) if names else None


def _check_report(report) -> np.ndarray:
    """The tIoU thresholds (K,) of a report that has everything compare reads; else the
    KeyError, TypeError, ValueError or UserError that names what is wrong."""
    seeds = [entry['seed'] for entry in report['per_seed']]
    if not seeds or len(set(seeds)) != len(seeds) or \
            not all(isinstance(s, int) for s in seeds):
        raise ValueError(f'seeds {seeds}')
    for entry in report['per_seed']:
        for key, _ in COLUMNS.values():
            numbers = [entry[key]['average_mAP'], *entry[key].get('averages', {}).values()]
            if not np.all(np.isfinite(np.asarray(numbers, np.float64))):
                raise ValueError(f'seed {entry["seed"]}: {key} holds a value that is not finite')
    if not isinstance(report['test_split'], str):
        raise ValueError(f'test_split {report["test_split"]!r}')
    return eval_files.check_thresholds(report['tiou_thresholds'])


def load_run(path: str) -> Run:
    """A run directory's report (one UserError line if missing or not a run report)."""
    file = os.path.join(path, 'report.json')
    if not os.path.isdir(path):
        raise UserError(f'{path}: no such run directory')
    if not os.path.exists(file):
        raise UserError(f'{path}: no report.json (train it to the end first)')
    report = read_json(file)
    try:
        return Run(path, report, _class_names(path, report), _check_report(report))
    except (KeyError, TypeError, ValueError, AttributeError, UserError) as e:
        raise UserError(f'{file}: not a run report ({type(e).__name__}: {e})') from None


def check_alike(a: Run, b: Run) -> None:
    """Refuses (one line) runs evaluated differently: test split, protocol, tIoU thresholds,
    and the classes where both runs name them."""
    ra, rb = a.report, b.report
    for what, va, vb in (('test split', ra['test_split'], rb['test_split']),
                         ('protocol', ra.get('protocol', 'seconds'),
                          rb.get('protocol', 'seconds'))):
        if va != vb:
            raise UserError(f'{b.path}: {what} {vb!r} differs from {a.path}\'s {va!r}')
    if a.thresholds.shape != b.thresholds.shape or not np.allclose(a.thresholds, b.thresholds,
                                                                   rtol=0, atol=1e-9):
        raise UserError(f'{b.path}: tIoU thresholds {range_name(b.thresholds)} differ from '
                        f'{a.path}\'s {range_name(a.thresholds)} (its selected steps were chosen '
                        'by another average): train both with the same '
                        '--config.eval.tiou_thresholds, e.g. BaS-Net with 0.1:0.7:0.1 beside UM')
    if None not in (a.class_names, b.class_names) and a.class_names != b.class_names:
        raise UserError(f'{b.path}: class list ({len(b.class_names)} classes) differs from '
                        f'{a.path}\'s ({len(a.class_names)})')


def protocols(a: Run, b: Run) -> list[str]:
    """The averages to compare: the runs' own average first, then every ``averages`` key that
    each seed of both runs has in every column, in A's order, de-duplicated."""
    main = range_name(a.thresholds)
    entries = [e[key] for r in (a, b) for e in r.report['per_seed'] for key, _ in COLUMNS.values()]
    return [main] + [k for k in entries[0].get('averages', {})
                     if k != main and all(k in e.get('averages', {}) for e in entries)]


class Comparison(NamedTuple):
    """B against A: columns[column][protocol] is a :class:`Paired`; ``main`` is the runs' own
    average; seeds only in one run are left out (``unpaired``)."""
    a: str
    b: str
    main: str
    columns: dict
    unpaired: dict


def compare_pair(a: Run, b: Run) -> Comparison:
    """Every column and protocol of B against A over their shared seeds (sorted)."""
    by_seed = [{e['seed']: e for e in r.report['per_seed']} for r in (a, b)]
    seeds = sorted(by_seed[0].keys() & by_seed[1].keys())
    if not seeds:
        raise UserError(f'{b.path} and {a.path} share no seed (seeds '
                        f'{sorted(by_seed[1])} and {sorted(by_seed[0])})')
    names = protocols(a, b)
    main = names[0]

    def values(run, key, name):
        entries = [run[s][key] for s in seeds]
        return [e['average_mAP'] if name == main else e['averages'][name] for e in entries]

    columns = {column: {name: paired(seeds, values(by_seed[0], key, name),
                                     values(by_seed[1], key, name)) for name in names}
               for column, (key, _) in COLUMNS.items()}
    unpaired = {r.path: sorted(set(s) - set(seeds)) for r, s in zip((a, b), by_seed)}
    return Comparison(a.path, b.path, main, columns, {k: v for k, v in unpaired.items() if v})


def compare_runs(paths) -> tuple[list[Comparison], list[str]]:
    """Each later run against the first: (comparisons, warnings). ``paths``: 2 to 26 run
    folders (named A to Z in the text)."""
    if not 2 <= len(paths) <= 26:
        raise UserError(f'compare takes 2 to 26 runs (A, B, ...), got {len(paths)}')
    runs = [load_run(p) for p in paths]
    for other in runs[1:]:
        check_alike(runs[0], other)
    unknown = list(dict.fromkeys(r.path for r in runs if r.class_names is None))
    warnings = [f'{", ".join(unknown)}: no class list in report.json or config.json; compared '
                'without checking that the classes match'] if unknown else []
    return [compare_pair(runs[0], other) for other in runs[1:]], warnings


# ---------------------------------------------------------------------------------------------
# Output

def _json_pair(p: Paired) -> dict:
    ci = [None, None] if p.n == 1 else list(p.ci95)   # JSON has no infinity
    return {'n': p.n, 'seeds': list(p.seeds), 'a': list(p.a), 'b': list(p.b),
            'deltas': list(p.deltas), 'mean_delta': p.mean_delta, 'ci95': ci,
            'p_value': p.p_value}


def to_json(comparisons: list[Comparison]) -> dict:
    """``comparisons``: one object per later run (``a``, ``b``, ``columns``); for exactly two
    runs the one comparison's ``columns`` also at the top level."""
    out = {'comparisons': [{'a': c.a, 'b': c.b, 'main': c.main, 'unpaired_seeds': c.unpaired,
                            'columns': {col: {name: _json_pair(p) for name, p in by.items()}
                                        for col, by in c.columns.items()}}
                           for c in comparisons]}
    if len(comparisons) == 1:
        out['columns'] = out['comparisons'][0]['columns']
    return out


def _cells(p: Paired) -> list[str]:
    half = 'n/a' if p.n == 1 else f'±{100 * (p.ci95[1] - p.mean_delta):.1f}'
    return [_points(p.mean_delta), half, f'{p.p_value:.2g}']


def format_comparison(c: Comparison, a: str = 'A', b: str = 'B') -> str:
    """The table of one comparison (80 columns: a row per average, mean Δ in points, 95% CI
    half-width, sign-flip p per column) and the verdict on the selected column's own average."""
    first = c.columns['selected'][c.main]
    lines = [f'{a} = {c.a}', f'{b} = {c.b}',
             f'paired seeds: {", ".join(map(str, first.seeds))} (n = {first.n})',
             f'{b} − {a} in mAP points: mean, 95% CI (± half-width), exact sign-flip p']
    lines += [f'seeds only in {path}: {", ".join(map(str, s))} (left out)'
              for path, s in c.unpaired.items()]
    rows = [[['average']] + [[title, '±CI', 'p'] for _, title in COLUMNS.values()]]
    rows += [[[name]] + [_cells(c.columns[col][name]) for col in COLUMNS]
             for name in c.columns['selected']]
    lines += tables.aligned_rows(rows)
    lines += ['* best test: the best step on the test split itself (test-set selection)',
              'selected, avg ' + c.main + ': ' + verdict(first, a, b)]
    return '\n'.join(lines)


def format_comparisons(comparisons: list[Comparison]) -> str:
    """Every comparison's table, the first run named A and the later ones B, C, ..."""
    return '\n\n'.join(format_comparison(c, 'A', chr(ord('B') + i))
                        for i, c in enumerate(comparisons))
