"""``wtal-jax compare``: paired-seed differences, their t interval and exact sign-flip p-value
against hand-computed cases and a brute-force loop; pairing and refusals of runs; the command."""

import itertools
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from test_data import assert_one_line_error
from test_loop import CONFIGS, TINY, data_root  # noqa: F401 (a fixture)
from wtal_jax import cli
from wtal_jax.io_utils import write_json_atomic
from wtal_jax.runs import summary
from wtal_jax.tools import compare

# t_{0.975, 2} in closed form: Student's t with 2 degrees of freedom has the CDF
# 1/2 + t / (2 sqrt(2 + t^2)), so F(t) = 0.975 gives t^2 = 2 * 0.95^2 / (1 - 0.95^2).
T_975_2 = math.sqrt(2 * 0.95 ** 2 / (1 - 0.95 ** 2))     # = 4.30265...; tables: 4.303
T_975_5, T_975_6 = 2.571, 2.447                          # tables, to 3 decimals


def test_the_t_quantile_matches_the_closed_form_and_the_tables():
    assert T_975_2 == pytest.approx(4.303, abs=5e-4)
    assert compare.t_quantile(2) == pytest.approx(T_975_2, rel=1e-12)
    assert compare.t_quantile(5) == pytest.approx(T_975_5, abs=5e-4)
    assert compare.t_quantile(6) == pytest.approx(T_975_6, abs=5e-4)


def test_three_seeds_by_hand():
    # deltas = (0.02, 0.03, 0.01): mean 0.02; deviations (0, 0.01, -0.01), so
    # sd = sqrt((0 + 1e-4 + 1e-4) / 2) = 0.01; half-width = t_{0.975,2} * 0.01 / sqrt(3).
    p = compare.paired([0, 1, 2], [0.50, 0.40, 0.45], [0.52, 0.43, 0.46])
    half = T_975_2 * 0.01 / math.sqrt(3)                  # 0.024841
    assert p.n == 3 and p.seeds == (0, 1, 2)
    assert p.deltas == pytest.approx((0.02, 0.03, 0.01))
    assert p.mean_delta == pytest.approx(0.02) and p.sd == pytest.approx(0.01)
    assert p.ci95 == pytest.approx((0.02 - half, 0.02 + half))
    # Sign flips of (2, 3, 1) points: sums ±6, ±2, ±0, ±4; |sum| >= 6 twice of 8.
    assert p.p_value == 0.25
    # sd 1 point: n = 6 gives 2.571 / sqrt(6) = 1.050 >= 1; n = 7 gives 2.447 / sqrt(7) = 0.925.
    assert compare.seeds_to_resolve(p.sd) == 7
    assert compare.verdict(p) == (
        'B − A = +2.0 points, 95% CI [-0.5, +4.5], n = 3, p = 0.25: not distinguishable from '
        'seed noise; about 7 seeds would resolve a 1-point difference at this spread')


def test_one_seed_has_no_interval_and_p_one():
    p = compare.paired([4], [0.5], [0.625])
    assert (p.n, p.mean_delta, p.p_value) == (1, 0.125, 1.0)
    assert math.isnan(p.sd) and p.ci95 == (-math.inf, math.inf)
    assert compare.seeds_to_resolve(p.sd) is None
    assert compare._json_pair(p)['ci95'] == [None, None]
    text = compare.verdict(p)
    assert text.startswith('B − A = +12.5 points, 95% CI n/a, n = 1, p = 1: ')
    assert 'unknown' in text


def test_zero_spread_gives_a_zero_width_interval():
    # Binary fractions: every delta is exactly 0.0625, so sd is exactly 0.
    a = [0.25, 0.5, 0.75, 0.125]
    p = compare.paired([0, 1, 2, 3], a, [x + 0.0625 for x in a])
    assert p.sd == 0 and p.ci95 == (0.0625, 0.0625)
    assert p.p_value == 2 / 16                  # only all + and all − reach |sum| = 4 deltas
    assert compare.seeds_to_resolve(0.0) == 2
    assert compare.verdict(p) == (
        'B − A = +6.2 points, 95% CI [+6.2, +6.2], n = 4, p = 0.125: B is better than A beyond '
        'seed noise by the t interval, though the sign-flip test cannot confirm it at n = 4 '
        '(its smallest p is 0.125); at zero spread any n >= 2 seeds would resolve a 1-point '
        'difference')


def test_seeds_to_resolve_by_hand_and_by_a_plain_loop():
    # sd 0.5 point: n = 3: 4.303 * 0.005 / 1.732 = 0.0124 >= 0.01; n = 4: 3.182 * 0.005 / 2 =
    # 0.0080 < 0.01.
    assert compare.seeds_to_resolve(0.005) == 4
    for sd in (0.001, 0.01, 0.037, 0.2):
        n = 2
        while stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) >= 0.01:
            n += 1
        assert compare.seeds_to_resolve(sd) == n


def brute_force_p(deltas):
    """The share of sign assignments whose |sum| reaches the observed one, one at a time."""
    observed = abs(sum(deltas))
    hits = [abs(sum(s * d for s, d in zip(signs, deltas))) >= observed
            for signs in itertools.product((1, -1), repeat=len(deltas))]
    return sum(hits) / len(hits)


def test_sign_flip_p_equals_a_brute_force_loop():
    rng = np.random.default_rng(0)
    for n in range(1, 9):
        for _ in range(5):
            # Multiples of 1/8 add up exactly, so ties are exact for the loop as well.
            deltas = rng.integers(-3, 4, n) / 8
            assert compare.sign_flip_p(deltas) == brute_force_p(list(deltas)), deltas
    assert compare.sign_flip_p([0.0, 0.0, 0.0]) == 1.0
    assert compare.sign_flip_p(np.full(20, 0.125)) == 2 / 2 ** 20


def test_sign_flip_p_counts_ties_up_to_rounding():
    # Deltas (0, 5, 9, -9) hundredths: observed |sum| 5; every assignment gives |±5 ± 9 ∓ 9|
    # = 5 or |±5 ± 9 ± 9| = 23 or 13, all at least 5: p = 1. In floats 0.05 + 0.09 - 0.09 and
    # 0.05 - 0.09 + 0.09 differ from 0.05 in the last bit; exact comparison would give 0.75.
    assert compare.sign_flip_p([0.0, 0.05, 0.09, -0.09]) == 1.0
    # Five deltas of 5 points and one of -1: observed |sum| 24; flipping the -1 gives 26, and
    # flipping the five 5s alone gives -24: as extreme. So 4 of 64 assignments.
    assert compare.sign_flip_p([0.05] * 5 + [-0.01]) == 4 / 64
    # Random hundredths against the brute-force loop on the integers (exact ties).
    rng = np.random.default_rng(1)
    for _ in range(200):
        hundredths = rng.integers(-9, 10, rng.integers(2, 8))
        assert compare.sign_flip_p(hundredths / 100) == brute_force_p(list(hundredths))
    assert_one_line_error(lambda: compare.sign_flip_p(np.ones(21)), '21 paired seeds', '20')


def test_verdicts_of_distinguishable_differences():
    better = compare.paired(range(6), [0.5] * 6, [0.52, 0.521, 0.519, 0.52, 0.522, 0.518])
    # deltas (2, 2.1, 1.9, 2, 2.2, 1.8) points: sd = sqrt(0.1 / 5) = 0.141 points; n = 2:
    # 12.706 * 0.141 / 1.414 = 1.27 >= 1; n = 3: 4.303 * 0.141 / 1.732 = 0.35 < 1.
    assert better.p_value == 2 / 64
    assert compare.verdict(better).endswith(
        ': B is better than A beyond seed noise; about 3 seeds would resolve a 1-point '
        'difference at this spread')
    worse = compare.paired(range(6), better.b, better.a)
    assert ': B is worse than A beyond seed noise;' in compare.verdict(worse)
    # CI [0.014, 0.066] excludes 0 but p = 0.0625 (see the test above).
    unconfirmed = compare.paired(range(6), [0.5] * 6, [0.55] * 5 + [0.49])
    assert 'beyond seed noise by the t interval, though the sign-flip test does not confirm it' \
        in compare.verdict(unconfirmed)
    # One outlier: mean 0.0917, sd 0.200, half-width 2.571 * 0.200 / 2.449 = 0.210 > mean.
    outlier = compare.paired(range(6), [0.0] * 6, [0.01] * 5 + [0.5])
    assert outlier.ci95[0] < 0 and outlier.p_value == 2 / 64
    assert 'not distinguishable from seed noise by the t interval, though the sign-flip test ' \
           'gives p <= 0.05' in compare.verdict(outlier)


def test_range_names_are_the_report_ones():
    assert compare.range_name([0.1, 0.2, 0.30000000000000004, 0.4, 0.5, 0.6, 0.7]) == '0.1:0.7'
    assert compare.range_name(np.round(np.arange(0.5, 0.951, 0.05), 12)) == '0.5:0.95'
    assert compare.range_name([0.3, 0.5]) == '0.3,0.5'


# ---------------------------------------------------------------------------------------------
# Runs written as reports: summary.run_report on evaluation rows

THUMOS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
CLASSES = ['Jump', 'Run']


def eval_row(step, split, seed, value, thresholds):
    return {'step': step, 'split': split, 'seed': seed, 'average_mAP': value,
            'mAP': [value] * len(thresholds), 'tiou_thresholds': thresholds,
            'averages': {'0.1:0.5': value + 0.01, '0.1:0.7': value, '0.3:0.7': value - 0.01}}


def write_run(folder, values, *, thresholds=THUMOS, test_split='test', config_classes=None,
              **keys):
    """A run folder whose report has, per seed, test values (step 10, step 20) = values[seed];
    the selection split prefers step 10. So selected = step 10, last = step 20, best on test =
    the larger of the two."""
    rows = []
    for seed, pair in values.items():
        for step, value, held_out in ((10, pair[0], 0.5), (20, pair[1], 0.4)):
            rows += [eval_row(step, test_split, seed, value, thresholds),
                     eval_row(step, 'selection', seed, held_out, thresholds)]
    os.makedirs(folder)
    write_json_atomic(os.path.join(folder, 'report.json'), summary.run_report(
        rows, seeds=list(values), select='selection', test_split=test_split, num_steps=20,
        **keys))
    if config_classes is not None:
        write_json_atomic(os.path.join(folder, 'config.json'),
                          {'data': {'class_names': config_classes}})
    return str(folder)


A = {0: (0.40, 0.42), 1: (0.45, 0.41), 2: (0.50, 0.52)}
B = {0: (0.42, 0.45), 1: (0.48, 0.40), 2: (0.51, 0.55)}
# Per column (A's values, B's values) of the runs' own average, 0.1:0.7, as built above.
EXPECTED = {'selected': ([0.40, 0.45, 0.50], [0.42, 0.48, 0.51]),
            'last': ([0.42, 0.41, 0.52], [0.45, 0.40, 0.55]),
            'best_on_test': ([0.42, 0.45, 0.52], [0.45, 0.48, 0.55])}


def test_run_report_writes_class_names_and_protocol_when_given(tmp_path):
    path = write_run(tmp_path / 'a', A, class_names=CLASSES, protocol='seconds')
    with open(os.path.join(path, 'report.json')) as f:
        report = json.load(f)
    assert report['class_names'] == CLASSES and report['protocol'] == 'seconds'
    plain = summary.run_report([eval_row(20, 'test', 0, 0.4, THUMOS)], seeds=[0], select='last',
                               test_split='test', num_steps=20)
    assert 'class_names' not in plain and 'protocol' not in plain


def test_each_column_and_average_pairs_the_reports_values(tmp_path):
    a = write_run(tmp_path / 'a', A, class_names=CLASSES)
    b = write_run(tmp_path / 'b', B, class_names=CLASSES)
    (c,), warnings = compare.compare_runs([a, b])
    assert warnings == [] and c.main == '0.1:0.7'
    assert list(c.columns) == ['selected', 'last', 'best_on_test']
    for column, (va, vb) in EXPECTED.items():
        assert list(c.columns[column]) == ['0.1:0.7', '0.1:0.5', '0.3:0.7']   # de-duplicated
        main = c.columns[column]['0.1:0.7']
        assert main.a == pytest.approx(va) and main.b == pytest.approx(vb)
        assert main.mean_delta == pytest.approx(np.mean(np.subtract(vb, va)))
        wide = c.columns[column]['0.1:0.5']
        assert wide.a == pytest.approx(np.add(va, 0.01))


def test_a_run_against_itself_differs_by_nothing(tmp_path):
    a = write_run(tmp_path / 'a', A, class_names=CLASSES)
    (c,), _ = compare.compare_runs([a, a])
    for by_protocol in c.columns.values():
        for p in by_protocol.values():
            assert p.deltas == (0.0, 0.0, 0.0) and p.mean_delta == 0.0
            assert p.ci95 == (0.0, 0.0) and p.p_value == 1.0
    assert 'identical on every paired seed' in compare.format_comparison(c)


def test_only_the_shared_seeds_are_paired(tmp_path):
    a = write_run(tmp_path / 'a', A)
    b = write_run(tmp_path / 'b', {1: B[1], 2: B[2], 3: B[0]})
    (c,), warnings = compare.compare_runs([a, b])
    assert c.columns['last']['0.1:0.7'].seeds == (1, 2)
    assert c.unpaired == {a: [0], b: [3]}
    assert f'seeds only in {a}: 0 (left out)' in compare.format_comparison(c)
    assert warnings == [f'{a}, {b}: no class list in report.json or config.json; compared '
                        'without checking that the classes match']   # neither run has one


def test_one_shared_seed_is_written_with_a_null_interval(tmp_path, capsys):
    a = write_run(tmp_path / 'a', A)
    b = write_run(tmp_path / 'b', {2: B[2]})
    out = str(tmp_path / 'one.json')
    assert cli.main(['compare', a, b, '--json', out]) == 0
    assert '95% CI n/a, n = 1, p = 1: ' in capsys.readouterr().out
    with open(out) as f:
        entry = json.load(f)['columns']['last']['0.3:0.7']
    assert entry['n'] == 1 and entry['ci95'] == [None, None] and entry['p_value'] == 1
    assert entry['deltas'] == pytest.approx([(0.55 - 0.01) - (0.52 - 0.01)])


def test_the_class_list_falls_back_to_config_json(tmp_path):
    a = write_run(tmp_path / 'a', A, config_classes=CLASSES)
    b = write_run(tmp_path / 'b', B, config_classes=['Jump', 'Walk'])
    assert_one_line_error(lambda: compare.compare_runs([a, b]), b, 'class list')
    c = write_run(tmp_path / 'c', B, config_classes=[])   # empty: unknown, with a warning
    d = write_run(tmp_path / 'd', B)
    write_json_atomic(os.path.join(d, 'config.json'), [1])  # not a config: unknown too
    _, warnings = compare.compare_runs([a, c, d])
    assert warnings == [f'{c}, {d}: no class list in report.json or config.json; compared '
                        'without checking that the classes match']


# ---------------------------------------------------------------------------------------------
# The command

def test_the_command_prints_tables_and_writes_the_json(tmp_path, capsys):
    a = write_run(tmp_path / 'a', A, class_names=CLASSES)
    b = write_run(tmp_path / 'b', B, class_names=CLASSES)
    out = str(tmp_path / 'cmp.json')
    assert cli.main(['compare', a, b, a, '--json', out]) == 0
    text = capsys.readouterr().out
    assert 'B − A' in text and 'C − A' in text and f'wrote {out}' in text
    with open(out) as f:
        doc = json.load(f)
    assert [(x['a'], x['b']) for x in doc['comparisons']] == [(a, b), (a, a)]
    assert 'columns' not in doc                        # three runs: only the list
    assert cli.main(['compare', a, b, '--json', out]) == 0
    with open(out) as f:
        doc = json.load(f)
    assert doc['columns'] == doc['comparisons'][0]['columns']
    assert set(doc['columns']) == {'selected', 'last', 'best_on_test'}
    for column, (va, vb) in EXPECTED.items():
        entry = doc['columns'][column]['0.1:0.7']
        assert set(entry) == {'n', 'seeds', 'a', 'b', 'deltas', 'mean_delta', 'ci95', 'p_value'}
        assert entry['n'] == 3 and entry['seeds'] == [0, 1, 2]
        assert entry['a'] == pytest.approx(va) and entry['b'] == pytest.approx(vb)
        assert entry['deltas'] == pytest.approx(np.subtract(vb, va))
        d = np.subtract(vb, va)
        half = T_975_2 * d.std(ddof=1) / math.sqrt(3)
        assert entry['mean_delta'] == pytest.approx(d.mean())
        assert entry['ci95'] == pytest.approx([d.mean() - half, d.mean() + half])
        hundredths = [round(x) for x in 100 * d]          # exact ties for the loop
        assert entry['p_value'] == brute_force_p(hundredths)


def bad_cases(tmp):
    """name -> (runs, fragment of the error); every run written under ``tmp``."""
    a = write_run(tmp / 'a', A, class_names=CLASSES)
    cases = {
        'unpaired seeds': ([a, write_run(tmp / 's', {5: B[0]}, class_names=CLASSES)],
                           'share no seed'),
        'missing report': ([a, str(tmp)], 'no report.json (train it to the end first)'),
        'no such run': ([a, str(tmp / 'nowhere')], 'no such run directory'),
        'tIoU thresholds': ([a, write_run(tmp / 't', B, thresholds=[0.3, 0.5],
                                          class_names=CLASSES)], 'tIoU thresholds 0.3,0.5'),
        'test split': ([a, write_run(tmp / 'v', B, test_split='val', class_names=CLASSES)],
                       "test split 'val'"),
        'classes': ([a, write_run(tmp / 'k', B, class_names=['Jump', 'Walk'])], 'class list'),
        'protocol': ([a, write_run(tmp / 'p', B, class_names=CLASSES, protocol='snippet')],
                     "protocol 'snippet'"),
        'one run': ([a], 'compare takes 2 to 26 runs'),
    }
    broken = tmp / 'broken'
    broken.mkdir()
    (broken / 'report.json').write_text('{"per_seed": [{"seed": 0}]}')
    cases['not a report'] = ([a, str(broken)], 'not a run report')
    return cases


def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys):
    out = tmp_path / 'previous.json'
    out.write_text('previous')
    for name, (runs, fragment) in bad_cases(tmp_path).items():
        assert cli.main(['compare', *runs, '--json', str(out)]) == 2, name
        captured = capsys.readouterr()
        assert captured.out == '', name
        assert captured.err.count('\n') == 1 and fragment in captured.err, (name, captured.err)
        assert captured.err.startswith('wtal-jax compare: error: ')
        assert out.read_text() == 'previous', name
    a = str(tmp_path / 'a')
    for bad in (str(tmp_path / 'no' / 'x.json'), str(tmp_path)):
        assert cli.main(['compare', a, a, '--json', bad]) == 2
        assert capsys.readouterr().err.count('\n') == 1
    assert sorted(os.listdir(tmp_path / 'a')) == ['report.json']


def test_the_module_imports_no_jax_and_parses_nothing():
    """Quick to start, NumPy and SciPy only; the command line lives in cli.py alone."""
    code = ('import sys; import wtal_jax.tools.compare; print(sorted(m for m in sys.modules '
            'if m.split(".")[0] in ("jax", "flax", "orbax")))')
    repo = os.path.dirname(CONFIGS)
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          check=True, env=dict(os.environ, PYTHONPATH=repo))
    assert proc.stdout.strip() == '[]'
    with open(compare.__file__) as f:
        source = f.read()
    for word in ('argparse', 'SystemExit', 'add_parser', 'sys.exit', 'print('):
        assert word not in source, word


def test_two_real_three_seed_runs_through_the_command(data_root, tmp_path, capsys):  # noqa: F811
    """Two tiny runs of 3 seeds (UM, then margin 50) trained by the command, then compared."""
    steps = ['--config.train.num_steps=4', '--config.eval.every_steps=2',
             '--config.checkpoint.every_steps=2', '--config.train.log_every_steps=2']
    runs = [str(tmp_path / 'a'), str(tmp_path / 'b')]
    for workdir, extra in zip(runs, ([], ['--config.loss.margin=50'])):
        assert cli.main(['train', '--config', os.path.join(CONFIGS, 'synthetic.py'),
                         '--workdir', workdir, '--seeds', '3', '--quiet', *TINY, *steps,
                         f'--config.data.root={data_root}', *extra]) == 0
    capsys.readouterr()
    out = str(tmp_path / 'cmp.json')
    assert cli.main(['compare', *runs, '--json', out]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = 'average | selected   ±CI    p | last step   ±CI    p | best test*   ±CI    p'
    assert lines[:3] == [f'A = {runs[0]}', f'B = {runs[1]}', 'paired seeds: 0, 1, 2 (n = 3)']
    assert lines[4].split() == head.split()
    assert [line.split('|')[0].strip() for line in lines[5:9]] == [
        '0.1:0.7', '0.1:0.5', '0.1:0.9', '0.3:0.7']
    assert lines[-2].startswith('selected, avg 0.1:0.7: B − A = ')
    assert ', n = 3, p = ' in lines[-2] and 'seed' in lines[-2]
    assert max(len(line) for line in lines[2:-2]) <= 80     # all but the paths and the verdict
    with open(out) as f:
        selected = json.load(f)['columns']['selected']['0.1:0.7']
    for run, key in zip(runs, ('a', 'b')):
        with open(os.path.join(run, 'report.json')) as f:
            report = json.load(f)
        assert selected[key] == [p['selected']['average_mAP'] for p in report['per_seed']]
    assert selected['deltas'] == pytest.approx(np.subtract(selected['b'], selected['a']))
