"""The ``ablate`` command on a tiny setting: tables written, finished runs not retrained."""

import json
import os

import numpy as np
import pytest

from wtal_jax.tools import ablation
from wtal_jax import cli
from wtal_jax.runs import loop
from wtal_jax.runs.rundir import RunDir
from wtal_jax.errors import UserError

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      'configs', 'synthetic.py')
TINY = ('synthetic.num_train=16', 'synthetic.num_test=8', 'synthetic.feature_dim=8',
        'synthetic.min_segments=20', 'synthetic.max_segments=40', 'data.feature_dim=16',
        'data.num_segments=16', 'model.embed_dim=16', 'train.batch_size=4',
        'train.num_steps=4', 'eval.every_steps=2', 'checkpoint.every_steps=2',
        'train.log_every_steps=2', 'eval.chunk_segments=256')


def _argv(workdir, *extra):
    return ['ablate', '--study', 'table3', '--settings', 'a,d', '--seeds', '2', '--workdir',
            str(workdir), '--config', CONFIG, '--quiet',
            *(f'--config.{o}' for o in TINY), f'--config.data.root={workdir / "data"}', *extra]


@pytest.fixture(scope='module')
def study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp('ablate')
    assert cli.main(_argv(workdir)) == 0
    return workdir


def test_writes_table_files_with_the_chosen_rows(study):
    table = json.loads((study / 'table3.json').read_text())
    assert [r['key'] for r in table['rows']] == ['a', 'd']
    assert table['num_steps'] == 4 and table['seeds'] == 2 and table['select'] == 'selection'
    for row in table['rows']:
        assert row['n'] == 2 and row['seeds'] == [0, 1]
        for kind in ('selected', 'last', 'test_selection'):
            assert len(row[kind]) == 2
            assert row[f'{kind}_mean'] == pytest.approx(np.mean(row[kind]))
            assert row[f'{kind}_std'] == pytest.approx(np.std(row[kind], ddof=1))
        # Selecting on the test split can only match or beat any other rule there.
        assert all(t >= max(s, f) for t, s, f in zip(row['test_selection'], row['selected'],
                                                    row['last']))
        assert all(step in (2, 4) for step in row['selected_step'])
    assert table['rows'][0]['overrides'] == ['loss.alpha=0', 'loss.beta=0',
                                             'localize.fuse_magnitude=False']
    markdown = (study / 'table3.md').read_text()
    assert '| setting | selected (selection split) | last step | best on test (test-set ' \
           "selection) | n | paper, THUMOS'14 |" in markdown
    lines = [line for line in markdown.splitlines() if line.startswith('| (')]
    assert len(lines) == 2
    # SPEC §7: the softmax-only baseline is derived (≈ 22.6); 32.5 is the fused baseline.
    assert lines[0].startswith('| (a) baseline, softmax score |') and lines[0].endswith(
        '| 2 | ≈ 22.6 |')
    assert lines[1].startswith('| (d) + L_um + L_be (full) |') and lines[1].endswith('| 41.9 |')
    with open(study / 'table3.png', 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_each_setting_is_one_run_of_its_seeds_with_its_config_and_report(study):
    table = json.loads((study / 'table3.json').read_text())
    for row, (key, alpha) in zip(table['rows'], (('a', 0.0), ('d', 5e-4))):
        run = study / 'table3' / key
        config = json.loads((run / 'config.json').read_text())
        assert config['loss']['alpha'] == alpha and config['seeds'] == [0, 1]
        report = json.loads((run / 'report.json').read_text())
        rows = RunDir(str(run)).read_metrics()
        for i, seed in enumerate((0, 1)):
            tests = [r for r in rows if r['split'] == 'test' and r['seed'] == seed]
            assert [r['step'] for r in tests] == [2, 4]
            assert row['last'][i] == tests[-1]['average_mAP']
            assert row['test_selection'][i] == max(r['average_mAP'] for r in tests)
            assert row['selected'][i] == report['per_seed'][i]['selected']['average_mAP']


def test_resuming_does_not_retrain(study, monkeypatch, capsys):
    before = (study / 'table3.json').read_text()

    def no_training(*args, **kwargs):
        raise AssertionError('a finished run was trained again')

    monkeypatch.setattr(loop, 'train_and_evaluate', no_training)
    assert cli.main(_argv(study)) == 0
    out = capsys.readouterr().out
    assert out.count('done before, not retrained') == 2
    assert (study / 'table3.json').read_text() == before


def test_a_run_with_another_config_is_refused(study, capsys):
    assert cli.main(_argv(study, '--config.train.num_steps=6')) == 2
    assert 'was trained with another config (train.num_steps: 4 -> 6)' in \
        capsys.readouterr().err


def test_settings_and_studies():
    assert [s.key for s in ablation.STUDIES['table3']] == ['a', 'b', 'c', 'd']
    assert [s.key for s in ablation.STUDIES['table5']] == [
        'm10', 'm25', 'm50', 'm100', 'm150', 'm200', 'm250']
    assert [s.key for s in ablation.select_settings('table5', 'm250,m10')] == ['m10', 'm250']
    with pytest.raises(UserError, match='has no setting x'):
        ablation.select_settings('table3', 'a,x')


def test_markdown_shows_mean_and_std_over_seeds():
    setting = ablation.STUDIES['table5'][3]
    per_seed = [{kind: {'average_mAP': f + d, 'step': 100} for kind, d in
                 (('selected', 0.0), ('last', -0.01), ('test_selection', 0.01))}
                for f in (0.40, 0.42, 0.44)]
    report = {'seeds': [0, 1, 2], 'per_seed': per_seed, 'tiou_thresholds': [0.5]}
    row = ablation.aggregate(setting, report)
    table = {'study': 'table5', 'split': 'test', 'tiou_thresholds': [0.5], 'num_steps': 10,
             'rows': [row]}
    assert '| m = 100 | 42.0 ± 2.0 | 41.0 ± 2.0 | 43.0 ± 2.0 | 3 | 41.9 |' in \
        ablation.format_markdown(table)


def test_a_relative_data_root_finds_the_finished_runs(study, monkeypatch, capsys):
    # The runs saved data.root absolute; the same folder given relative is the same config.
    monkeypatch.chdir(study)
    argv = ['--config.data.root=data' if a.startswith('--config.data.root=') else a
            for a in _argv(study)]

    def no_training(*args, **kwargs):
        raise AssertionError('a finished run was trained again')

    monkeypatch.setattr(loop, 'train_and_evaluate', no_training)
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.count('done before, not retrained') == 2


def test_settings_are_compared_with_the_default_setting_among_them(study):
    # Under the config's own values (alpha 5e-4, beta 1, fused scores) setting (d) is the
    # default: (a) is compared with it, seed by seed, and no setting is added for it.
    table = json.loads((study / 'table3.json').read_text())
    assert table['default'] == 'd' and [r['key'] for r in table['rows']] == ['a', 'd']
    (comparison,) = table['comparisons']
    assert comparison['a'].endswith(os.path.join('table3', 'd'))
    assert comparison['b'].endswith(os.path.join('table3', 'a'))
    rows = {r['key']: r for r in table['rows']}
    pair = comparison['columns']['selected'][comparison['main']]
    assert pair['deltas'] == pytest.approx(np.subtract(rows['a']['selected'],
                                                       rows['d']['selected']))
    markdown = (study / 'table3.md').read_text()
    assert "The default (the config's own values): (d) + L_um + L_be (full)." in markdown
    assert '- (a) baseline, softmax score − default = ' in markdown
