"""The ``ablate`` command on a tiny setting: tables written, finished runs not retrained."""

import json
import os

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
    return ['ablate', '--study', 'table3', '--settings', 'a,d', '--seeds', '1', '--workdir',
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
    assert table['num_steps'] == 4 and table['seeds'] == 1
    for row in table['rows']:
        assert row['n'] == 1 and len(row['final']) == len(row['best']) == 1
        assert 0.0 <= row['final_mean'] <= row['best_mean'] <= 1.0
        assert row['best_step'][0] in (2, 4)
        assert row['final_std'] == 0.0
    assert table['rows'][0]['overrides'] == ['loss.alpha=0', 'loss.beta=0',
                                             'localize.fuse_magnitude=False']
    markdown = (study / 'table3.md').read_text()
    lines = [line for line in markdown.splitlines() if line.startswith('| (')]
    assert len(lines) == 2
    assert lines[0].startswith('| (a) baseline, softmax score |') and lines[0].endswith('| 32.5 |')
    assert lines[1].startswith('| (d) + L_um + L_be (full) |')
    with open(study / 'table3.png', 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_each_run_has_its_folder_config_and_result(study):
    for key, alpha in (('a', 0.0), ('d', 5e-4)):
        run = study / 'table3' / key / 'seed_0'
        config = json.loads((run / 'config.json').read_text())
        assert config['loss']['alpha'] == alpha and config['seed'] == 0
        summary = json.loads((run / 'result.json').read_text())['summary']
        evals = [r for r in RunDir(str(run)).read_metrics() if r['split'] == 'test']
        assert [r['step'] for r in evals] == [2, 4]
        assert summary['final'] == evals[-1]['average_mAP']
        assert summary['best'] == max(r['average_mAP'] for r in evals)


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
    assert 'was trained with another config (differs in train.num_steps)' in \
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
    summaries = [{'final': f, 'best': f + 0.01, 'best_step': 100, 'final_mAP': [f],
                  'tiou_thresholds': [0.5]} for f in (0.40, 0.42, 0.44)]
    row = ablation.aggregate(setting, range(3), summaries)
    table = {'study': 'table5', 'split': 'test', 'tiou_thresholds': [0.5], 'num_steps': 10,
             'rows': [row]}
    assert '| m = 100 | 42.0 ± 2.0 | 43.0 ± 2.0 | 3 | 41.9 |' in ablation.format_markdown(table)
