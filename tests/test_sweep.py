"""``wtal-jax sweep`` on a tiny setting: one run per point of the grid, the default point added,
the table and the comparisons against the default checked against the runs' own reports;
finished points not retrained, interrupted ones resumed; bad input refused before anything is
written."""

import json
import os
import shutil

import numpy as np
import pytest

from wtal_jax import cli
from wtal_jax.errors import UserError
from wtal_jax.runs import loop
from wtal_jax.tools import compare, sweep

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      'configs', 'synthetic.py')
TINY = ('synthetic.num_train=16', 'synthetic.num_test=8', 'synthetic.feature_dim=8',
        'synthetic.min_segments=20', 'synthetic.max_segments=40', 'data.feature_dim=16',
        'data.num_segments=16', 'model.embed_dim=16', 'train.batch_size=4',
        'train.num_steps=4', 'eval.every_steps=2', 'checkpoint.every_steps=2',
        'train.log_every_steps=2', 'eval.chunk_segments=256')


def _argv(workdir, *sets, extra=(), data=None):
    return ['sweep', *(a for s in sets for a in ('--set', s)), '--seeds', '2', '--workdir',
            str(workdir), '--config', CONFIG, '--quiet', *(f'--config.{o}' for o in TINY),
            f'--config.data.root={data or workdir.parent / "data"}', *extra]


def _base():
    return sweep.base_config(CONFIG, [f'--config.{o}' for o in TINY])


@pytest.fixture(scope='module')
def swept(tmp_path_factory):
    workdir = tmp_path_factory.mktemp('sweep') / 'runs'
    assert cli.main(_argv(workdir, 'loss.margin=50,200')) == 0
    return workdir


def _report(run):
    with open(run / 'report.json') as f:
        return json.load(f)


def test_one_run_per_point_and_the_default_first(swept):
    table = json.loads((swept / 'sweep.json').read_text())
    names = ['loss.margin=100', 'loss.margin=50', 'loss.margin=200']
    assert [r['key'] for r in table['rows']] == names
    assert table['default'] == 'loss.margin=100' and table['rows'][0]['overrides'] == [
        'loss.margin=100.0']
    for name, margin in zip(names, (100.0, 50.0, 200.0)):
        config = json.loads((swept / name / 'config.json').read_text())
        assert config['loss']['margin'] == margin and config['seeds'] == [0, 1]
    for row in table['rows']:
        report = _report(swept / row['key'])
        for kind in ('selected', 'last', 'test_selection'):
            values = [p[kind]['average_mAP'] for p in report['per_seed']]
            assert row[kind] == values
            assert row[f'{kind}_mean'] == pytest.approx(np.mean(values))
            assert row[f'{kind}_std'] == pytest.approx(np.std(values, ddof=1))
    with open(swept / 'sweep.png', 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_markdown_rows_and_the_verdicts_against_the_default(swept):
    table = json.loads((swept / 'sweep.json').read_text())
    markdown = (swept / 'sweep.md').read_text()
    assert '| setting | selected (selection split) | last step | best on test (test-set ' \
           'selection) | n |' in markdown
    assert "paper, THUMOS'14" not in markdown   # no paper's number for a free grid
    row = table['rows'][1]
    assert (f"| loss.margin=50 | {100 * row['selected_mean']:.1f} ± "
            f"{100 * row['selected_std']:.1f} |") in markdown
    assert "The default (the config's own values): loss.margin=100." in markdown
    verdicts = [line for line in markdown.splitlines() if line.startswith('- ')]
    assert len(verdicts) == 2
    assert verdicts[0].startswith('- loss.margin=50 − default = ')
    assert verdicts[1].startswith('- loss.margin=200 − default = ')


def test_each_point_is_compared_with_the_default_seed_by_seed(swept):
    table = json.loads((swept / 'sweep.json').read_text())
    default = _report(swept / 'loss.margin=100')
    assert [(c['a'], c['b']) for c in table['comparisons']] == [
        (str(swept / 'loss.margin=100'), str(swept / name))
        for name in ('loss.margin=50', 'loss.margin=200')]
    for c in table['comparisons']:
        point = _report(swept / os.path.basename(c['b']))
        for column, key in (('selected', 'selected'), ('last', 'last'),
                            ('best_on_test', 'test_selection')):
            pair = c['columns'][column][c['main']]
            deltas = [b[key]['average_mAP'] - a[key]['average_mAP']
                      for a, b in zip(default['per_seed'], point['per_seed'])]
            assert pair['seeds'] == [0, 1] and pair['deltas'] == pytest.approx(deltas)
            assert pair['mean_delta'] == pytest.approx(np.mean(deltas))
        # The same numbers as wtal-jax compare gives for the two runs.
        (same,), _ = compare.compare_runs([c['a'], c['b']])
        assert compare.to_json([same])['comparisons'][0]['columns'] == c['columns']


def test_finished_points_are_not_retrained(swept, monkeypatch, capsys):
    before = (swept / 'sweep.json').read_text()

    def no_training(*args, **kwargs):
        raise AssertionError('a finished point was trained again')

    monkeypatch.setattr(loop, 'train_and_evaluate', no_training)
    assert cli.main(_argv(swept, 'loss.margin=50,200')) == 0
    assert capsys.readouterr().out.count('done before, not retrained') == 3
    assert (swept / 'sweep.json').read_text() == before


def test_an_interrupted_point_resumes(swept, tmp_path, capsys):
    workdir = tmp_path / 'runs'
    shutil.copytree(swept, workdir)
    os.remove(workdir / 'loss.margin=200' / 'report.json')   # stopped before its report
    assert cli.main(_argv(workdir, 'loss.margin=50,200', data=swept.parent / 'data')) == 0
    out = capsys.readouterr()
    assert out.out.count('done before, not retrained') == 2
    assert f"resuming from step 4 in {workdir / 'loss.margin=200'}" in out.err
    assert _report(workdir / 'loss.margin=200')['per_seed'] == \
        _report(swept / 'loss.margin=200')['per_seed']


def _assert_refused(capsys, argv, workdir, *words):
    listing = sorted(os.listdir(workdir)) if os.path.isdir(workdir) else None
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('wtal-jax sweep: error: '), err
    for word in words:
        assert word in err[0], (word, err[0])
    assert (sorted(os.listdir(workdir)) if os.path.isdir(workdir) else None) == listing


@pytest.mark.parametrize('sets, words', [
    (['loss.margn=1,2'], ['--set loss.margn: no such field', 'did you mean loss.margin?']),
    (['loss.margin=10,ten'], ['--set loss.margin=ten: cannot parse as float']),
    (['loss.margin=10,-1'], ['loss.margin=-1.0']),
    (['loss.margin='], ['no values']),
    (['loss.margin'], ['expected KEY=V1,V2']),
    ([], ['an empty grid']),
    (['loss.margin=10,10.0'], ['are the same point (loss.margin=10)']),
    (['loss.margin=10', 'loss.margin=20'], ['loss.margin given more than once']),
    (['loss=1'], ['a section']),
])
def test_bad_grids_are_refused_before_anything_is_written(sets, words, tmp_path, capsys):
    workdir = tmp_path / 'runs'
    _assert_refused(capsys, _argv(workdir, *sets), workdir, *words)
    assert not workdir.exists()


def test_a_point_trained_with_another_config_is_refused(swept, capsys):
    _assert_refused(capsys, _argv(swept, 'loss.margin=50,200',
                                  extra=['--config.train.num_steps=6']), swept,
                    'was trained with another config (train.num_steps: 4 -> 6)')


def test_the_grid_is_the_cross_product_named_by_parsed_values():
    points = sweep.grid_points(['loss.margin=10,25', 'localize.fuse_magnitude=true,0'],
                               _base(), CONFIG)
    assert [p.key for p in points] == [
        'loss.margin=10,localize.fuse_magnitude=True',
        'loss.margin=10,localize.fuse_magnitude=False',
        'loss.margin=25,localize.fuse_magnitude=True',
        'loss.margin=25,localize.fuse_magnitude=False']
    assert points[1].overrides == ('loss.margin=10', 'localize.fuse_magnitude=0')
    assert points[1].label == 'loss.margin=10, localize.fuse_magnitude=False'


def test_a_list_valued_field_separates_its_points_by_semicolons():
    base = _base()
    points = sweep.grid_points(['eval.tiou_thresholds=0.1:0.3:0.1;0.3,0.5;[0.5]'], base, CONFIG)
    assert [p.key for p in points] == ['eval.tiou_thresholds=0.1_0.2_0.3',
                                       'eval.tiou_thresholds=0.3_0.5',
                                       'eval.tiou_thresholds=0.5']
    cfg = sweep.point_config(base, points[1], 2)
    assert tuple(cfg.eval.tiou_thresholds) == (0.3, 0.5) and tuple(cfg.seeds) == (0, 1)
    default, in_grid = sweep.default_point(points, base, CONFIG)
    assert not in_grid and default.key == 'eval.tiou_thresholds=0.1_0.2_0.3_0.4_0.5_0.6_0.7'
    # The default's override parses back to the config's own thresholds.
    again = sweep.point_config(base, default, (3,))
    assert tuple(again.eval.tiou_thresholds) == tuple(base.eval.tiou_thresholds)
    with pytest.raises(UserError, match='--set eval.tiou_thresholds=x: cannot parse as float'):
        sweep.grid_points(['eval.tiou_thresholds=0.1,x'], base, CONFIG)


def test_folder_names_keep_to_safe_characters():
    assert sweep.folder_name({'data.modality': 'rgb/flow x'}) == 'data.modality=rgb-flow-x'
    assert sweep.value_text(5e-4) == '0.0005' and sweep.value_text((0.1, 0.5)) == '0.1_0.5'
