"""Several processes with jax.distributed, for real: two processes on the loopback address, each
with two CPU devices, train the same model as one process with four devices or with one."""

import glob
import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from wtal_jax import cli
from wtal_jax.runs import checkpoints, rundir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--config.synthetic.num_train=20', '--config.synthetic.num_test=8',
        '--config.synthetic.num_classes=3', '--config.synthetic.feature_dim=8',
        '--config.data.feature_dim=16', '--config.synthetic.min_segments=20',
        '--config.synthetic.max_segments=60', '--config.data.num_segments=32',
        '--config.model.embed_dim=32', '--config.train.batch_size=4',
        '--config.eval.chunk_segments=256', '--config.optim.learning_rate=1e-3',
        '--config.eval.every_steps=3', '--config.checkpoint.every_steps=3',
        '--config.train.log_every_steps=2']


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def train_command(root, workdir, steps, *extra):
    return [sys.executable, '-m', 'wtal_jax', 'train', '--config',
            os.path.join(REPO, 'configs', 'synthetic.py'), '--workdir', str(workdir), '--quiet',
            f'--config.data.root={root}', f'--config.train.num_steps={steps}', *TINY, *extra]


def env_with(devices: int) -> dict:
    return dict(os.environ, JAX_PLATFORMS='cpu',
                XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')


def run(command, devices):
    proc = subprocess.run(command, capture_output=True, text=True, env=env_with(devices),
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def run_processes(root, workdir, steps, *, processes=2, devices=2):
    port = free_port()
    procs = [subprocess.Popen(
        train_command(root, workdir, steps, f'--coordinator=127.0.0.1:{port}',
                      f'--num-processes={processes}', f'--process-id={i}'),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_with(devices))
        for i in range(processes)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    return outputs


def state_of(workdir):
    return jax.device_get(rundir.load_checkpoint(str(workdir), which='latest').state)


def rows_without_timing(workdir):
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
        rows = [json.loads(line) for line in f]
    for r in rows:
        r.pop('steps_per_second', None)
    return rows


def assert_close_rows(a, b):
    assert [(r['step'], r['split'], r['seed']) for r in a] == \
        [(r['step'], r['split'], r['seed']) for r in b]
    for x, y in zip(a, b):
        for key in ('loss', 'average_mAP'):
            if key in x:
                assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-6), (x['step'], key)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp('distributed')
    root = base / 'data'
    outputs = run_processes(root, base / 'two_processes', 6)
    run(train_command(root, base / 'four_devices', 6), devices=4)
    run(train_command(root, base / 'one_device', 6), devices=1)
    return base, outputs


def test_two_processes_train_the_model_of_one_process(runs):
    base, outputs = runs
    (out0, err0), (out1, err1) = outputs
    assert 'on 4 devices in 2 processes' in err0
    # Process 0 alone prints the report and writes the run's files, each once.
    assert 'report.json' in out0
    assert [line for line in out1.splitlines() if not line.startswith('[Gloo]')] == []
    two = state_of(base / 'two_processes')
    for other in ('four_devices', 'one_device'):
        for a, b in zip(jax.tree.leaves(two), jax.tree.leaves(state_of(base / other))):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
        assert_close_rows(rows_without_timing(base / 'two_processes'),
                          rows_without_timing(base / other))
    assert sorted(os.listdir(base / 'two_processes' / 'checkpoints')) == ['3', '6']


def test_a_run_saved_by_two_processes_resumes_in_one(runs):
    base, _ = runs
    run(train_command(base / 'data', base / 'two_processes', 9), devices=1)
    run(train_command(base / 'data', base / 'one_device', 9), devices=1)
    for a, b in zip(jax.tree.leaves(state_of(base / 'two_processes')),
                    jax.tree.leaves(state_of(base / 'one_device'))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_two_processes_resume_past_a_damaged_checkpoint(runs, tmp_path):
    """Both processes skip the damaged latest step and restore the one before; process 0 moves
    the damaged step aside and every process saves that step again: the same model."""
    base, _ = runs
    workdir = tmp_path / 'run'
    shutil.copytree(base / 'four_devices', workdir)
    original = state_of(workdir)   # step 6
    files = glob.glob(str(workdir / checkpoints.CHECKPOINT_DIR / '6' / 'state' /
                          'ocdbt.process_*' / 'd' / '*'))
    largest = max(files, key=os.path.getsize)
    with open(largest, 'rb') as f:
        data = f.read()
    with open(largest, 'wb') as f:
        f.write(data[:len(data) // 2])
    (out0, err0), (out1, err1) = run_processes(base / 'data', workdir, 6)
    warned = [line for line in err0.splitlines() if line.startswith('warning: ')]
    assert len(warned) == 1 and 'falling back to step 3' in warned[0], err0[-3000:]
    assert 'warning' not in err1   # said once
    assert os.listdir(workdir / 'damaged_checkpoints') == ['6']
    assert sorted(os.listdir(workdir / checkpoints.CHECKPOINT_DIR)) == ['3', '6']
    for a, b in zip(jax.tree.leaves(state_of(workdir)), jax.tree.leaves(original)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('flags', [['--coordinator', '127.0.0.1:1'],
                                   ['--num-processes', '2', '--process-id', '0'],
                                   ['--coordinator', '127.0.0.1:1', '--num-processes', '2',
                                    '--process-id', '2']])
def test_incomplete_or_wrong_process_flags_are_one_line(flags, tmp_path, capsys, monkeypatch):
    for name in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'):
        monkeypatch.delenv(name, raising=False)
    status = cli.main(['train', '--config', os.path.join(REPO, 'configs', 'synthetic.py'),
                       '--workdir', str(tmp_path / 'run'), *flags])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith('wtal-jax train: error: ')
    assert not os.path.exists(tmp_path / 'run')
