"""``wtal-jax show RUN``: a run's config, data, seeds, steps, checkpoints and the selected one,
its report; also a run without a report or without checkpoints; read without changing it."""

import json
import os
import shutil

import pytest

from wtal_jax import cli, config
from wtal_jax.runs import rundir, summary
from wtal_jax.runs.rundir import RunDir
from wtal_jax.tools import show

from test_loop import RUN, data_root, saved_steps, tiny_config, train  # noqa: F401 (a fixture)


@pytest.fixture(scope='module')
def trained(data_root, tmp_path_factory):
    workdir = tmp_path_factory.mktemp('show') / 'run'
    train(data_root, workdir, *RUN, '--config.train.num_steps=8', '--config.seeds=[0,1]',
          '--config.loss.margin=50')
    return workdir


def snapshot(folder) -> dict:
    out = {}
    for path, _, files in os.walk(folder):
        for name in files:
            full = os.path.join(path, name)
            with open(full, 'rb') as f:
                out[os.path.relpath(full, folder)] = (f.read(), os.stat(full).st_mtime_ns)
    return out


def show_cli(capsys, *args):
    status = cli.main(['show', *map(str, args)])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_a_finished_run(trained, capsys):
    before = snapshot(trained)
    status, text, _ = show_cli(capsys, trained)
    assert status == 0 and snapshot(trained) == before   # read, nothing written
    lines = text.splitlines()
    assert lines[0] == f'run {trained}' and lines[1] == 'method um; seeds 0, 1'
    # The fields the run changed from UM's defaults, each with both values.
    assert '  loss.margin = 50.0 (default 100.0)' in lines
    assert '  train.num_steps = 8 (default 10000)' in lines
    assert '  train.batch_size = 6 (default 16)' in lines
    assert not any(line.startswith('  loss.alpha') for line in lines)   # at its default
    assert 'steps: 8 of 8 checkpointed; metrics logged to step 8' in lines
    kept = saved_steps(trained)
    assert f"checkpoints kept: {', '.join(map(str, kept))}" in lines
    assert 'selected (checkpoint.select=selection): best selection/average_mAP (max)' in lines
    rows = RunDir(str(trained)).read_metrics()
    for seed in (0, 1):
        step = rundir.load_checkpoint(str(trained), seed=seed).step   # what evaluate restores
        value = next(r['average_mAP'] for r in rows
                     if r['split'] == 'selection' and r['seed'] == seed and r['step'] == step)
        assert f'  seed {seed}: step {step} (selection/average_mAP {value:.4f})' in lines
    with open(trained / 'report.json') as f:
        assert text.rstrip().endswith(summary.format_report(json.load(f)))


def test_json_holds_the_same(trained, data_root, capsys):
    status, text, _ = show_cli(capsys, trained, '--json')
    shown = json.loads(text)
    assert status == 0 and shown['seeds'] == [0, 1] and shown['checkpoints'] == saved_steps(
        trained)
    assert shown['changed']['loss.margin'] == {'default': 100.0, 'value': 50.0}
    cfg = tiny_config(data_root, *RUN, '--config.train.num_steps=8', '--config.loss.margin=50')
    defaults = config.to_dict(config.default_config('um'))
    assert shown['changed']['data.num_segments'] == {
        'default': defaults['data']['num_segments'], 'value': cfg.data.num_segments}
    assert shown['data']['videos'] == 15   # 20 training videos, 5 held out for selection
    assert [s['seed'] for s in shown['selected']] == [0, 1]
    with open(trained / 'report.json') as f:
        assert shown['report'] == json.load(f)


def test_a_run_without_report_and_one_without_checkpoints(trained, data_root, tmp_path, capsys):
    unfinished = tmp_path / 'unfinished'
    shutil.copytree(trained, unfinished)
    os.remove(unfinished / 'report.json')
    status, text, _ = show_cli(capsys, unfinished)
    assert status == 0 and text.rstrip().endswith(
        'report: none (report.json is written when training ends)')
    assert 'checkpoints kept: ' in text
    empty = tmp_path / 'empty'
    cfg = tiny_config(data_root)
    with RunDir(str(empty), write=True) as run:
        run.write_config(cfg)
    status, text, _ = show_cli(capsys, empty)
    lines = text.splitlines()
    assert status == 0
    assert 'data: fingerprint unknown: no checkpoint' in lines
    assert f'steps: none of {cfg.train.num_steps} checkpointed; no metrics logged' in lines
    assert 'checkpoints: none' in lines and lines[-1].startswith('report: none')


def test_not_a_run_is_one_line(tmp_path, capsys):
    status, _, err = show_cli(capsys, tmp_path / 'nothing')
    assert status == 2 and err.strip() == \
        f'wtal-jax show: error: {tmp_path / "nothing"}: no such run directory'
    status, _, err = show_cli(capsys, tmp_path)
    assert status == 2 and len(err.strip().splitlines()) == 1 and 'config.json' in err


def test_values_are_shown_short():
    assert show._value([0.1, 0.2]) == '(0.1, 0.2)'
    assert show._value('x' * 50) == "'" + 'x' * 36 + '...'


def test_the_report_file_is_the_run_directory_s():
    assert show.REPORT_FILE == rundir.REPORT_FILE
