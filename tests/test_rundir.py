"""The run directory (issue 11): one writer at a time, damaged checkpoints skipped with a one-line
warning, a crash-safe metrics log, and one line for a run folder, config or disk that is wrong.

What a user sees is checked through the real command line (``python -m wtal_jax``) in
subprocesses; the variants of one problem are checked on :class:`RunDir` itself.
"""

import glob
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from wtal_jax import config
from wtal_jax.errors import UserError
from wtal_jax.data import splits
from wtal_jax.runs import checkpoints, rundir
from wtal_jax.runs.rundir import METRICS_FILE, RunDir

from test_loop import TINY, data_root, without_timing  # noqa: F401 (a fixture)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, 'configs', 'synthetic.py')
# A 3-step log window cut by checkpoints every 2 steps; evaluations every 4; 8 steps kept.
RUN = ['--config.train.log_every_steps=3', '--config.eval.every_steps=4',
       '--config.checkpoint.every_steps=2', '--config.checkpoint.keep=4']
STEPS = '--config.train.num_steps=8'


# ---------------------------------------------------------------------------------------------
# Running the command line

def cli_env(cache: str) -> dict:
    # Every subprocess compiles the same small programs: they share them through JAX's
    # persistent cache, a test-speed measure (the compiled code is the same either way). The
    # cache writes its entries in place, so a process may read one that another is writing,
    # warn and compile it again: that warning is the cache's, not ours, and is silenced.
    return dict(os.environ, JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=cache,
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
                JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0',
                PYTHONWARNINGS='ignore:Error reading persistent compilation cache entry')


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    return cli_env(str(tmp_path_factory.getbasetemp() / 'jax-compilation-cache'))


def start(env, *args, cwd=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, '-m', 'wtal_jax', *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=cwd)


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wtal(env, *args, cwd=None) -> subprocess.CompletedProcess:
    return finish(start(env, *args, cwd=cwd))


def train_args(root, workdir, *extra):
    return ['train', '--config', CONFIG, '--workdir', workdir, '--quiet', *TINY,
            f'--config.data.root={root}', *extra]


def assert_ok(proc):
    assert proc.returncode == 0, f'rc {proc.returncode}\n{proc.stdout}\n{proc.stderr}'
    assert 'Traceback' not in proc.stderr, proc.stderr


# What train says about its data and its start before it may fail: information, not errors.
INFORMATION = ('note: ', 'training data: ', 'resuming from step ')


def assert_one_line_error(proc, command, *words, status=2):
    """Exit ``status``, and on stderr one error line (after train's information, if any)."""
    assert proc.returncode == status, f'rc {proc.returncode}\n{proc.stdout}\n{proc.stderr}'
    lines = [line for line in proc.stderr.strip().splitlines()
             if not line.startswith(INFORMATION)]
    assert len(lines) == 1, proc.stderr
    assert proc.stderr.strip().endswith(lines[0]) and 'Traceback' not in proc.stderr
    assert lines[0].startswith(f'wtal-jax {command}: error: '), lines[0]
    for word in words:
        assert str(word) in lines[0], (word, lines[0])
    return lines[0]


def warnings_of(proc) -> list[str]:
    """The stderr lines, each of which must be a one-line warning."""
    lines = proc.stderr.strip().splitlines()
    assert all(line.startswith('warning: ') for line in lines), proc.stderr
    return lines


# ---------------------------------------------------------------------------------------------
# The run folder's files

def snapshot(folder, *, lock=True) -> dict[str, bytes]:
    """Every file under ``folder``: path relative to it -> content (the lock file, naming the
    last process that wrote the run, left out unless ``lock``)."""
    files = {}
    for base, _, names in os.walk(folder):
        for name in names:
            if name == '.lock' and not lock:
                continue
            path = os.path.join(base, name)
            with open(path, 'rb') as f:
                files[os.path.relpath(path, folder)] = f.read()
    return files


def saved_steps(workdir) -> list[int]:
    folder = os.path.join(workdir, checkpoints.CHECKPOINT_DIR)
    return sorted(int(name) for name in os.listdir(folder) if name.isdigit())


def data_files(workdir, step) -> list[str]:
    """The files in which orbax stores the arrays of ``step``, largest first."""
    pattern = os.path.join(workdir, checkpoints.CHECKPOINT_DIR, str(step), 'state',
                           'ocdbt.process_*', 'd', '*')
    return sorted(glob.glob(pattern), key=os.path.getsize, reverse=True)


def truncate(path):
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])


def on_one_device(tree):
    return checkpoints.abstract_like(
        tree, jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))


def orbax_restore(workdir, step):
    """``step``'s state as orbax alone restores it, without our checksums."""
    cfg = RunDir(workdir).read_config()
    abstract = checkpoints.abstract_state(cfg, splits.class_names(cfg),
                                         jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))
    with checkpoints.open_manager(os.path.join(workdir, checkpoints.CHECKPOINT_DIR),
                                    keep=1, read_only=True) as manager:
        return jax.device_get(manager.restore(step, args=checkpoints.ocp.args.Composite(
            state=checkpoints.ocp.args.StandardRestore(abstract))).state)


def flip_a_byte_orbax_loads(workdir, step) -> str:
    """Flips one byte of ``step``'s largest array data file, at the first place from its middle
    where orbax still loads the step, with other values: the damage a checksum must catch."""
    original = orbax_restore(workdir, step)
    path = data_files(workdir, step)[0]
    with open(path, 'rb') as f:
        data = bytearray(f.read())
    for offset in range(len(data) // 2, len(data)):
        data[offset] ^= 0x10
        with open(path, 'wb') as f:
            f.write(data)
        try:
            changed = orbax_restore(workdir, step)
        except Exception:  # this byte breaks the compressed stream: orbax would notice
            data[offset] ^= 0x10
            continue
        differ = [a for a, b in zip(jax.tree.leaves(original), jax.tree.leaves(changed))
                  if not np.array_equal(a, b, equal_nan=True)]
        assert len(differ) == 1, 'one flipped byte changes one array'
        return path
    raise AssertionError(f'no byte of {path} flips silently')


# ---------------------------------------------------------------------------------------------
# One uninterrupted run through the command line (the data: test_loop.data_root)

@pytest.fixture(scope='module')
def reference(data_root, env, tmp_path_factory):
    """8 steps, checkpoints 2, 4, 6, 8 kept, evaluations at 4 and 8."""
    workdir = str(tmp_path_factory.mktemp('reference') / 'run')
    proc = wtal(env, *train_args(data_root, workdir, *RUN, STEPS))
    assert_ok(proc)
    assert saved_steps(workdir) == [2, 4, 6, 8]
    return workdir


def copy_run(reference, tmp_path, name='run') -> str:
    workdir = str(tmp_path / name)
    shutil.copytree(reference, workdir)
    return workdir


def params_of(workdir, step=None):
    path = workdir if step is None else os.path.join(workdir, 'checkpoints', str(step))
    return jax.device_get(rundir.load_checkpoint(path, which='latest').state)


def rows_of(workdir):
    return RunDir(workdir).read_metrics(quiet=True)


# ---------------------------------------------------------------------------------------------
# 1. One writer at a time

HOLD = ('import sys; from wtal_jax.runs.rundir import RunDir; '
        'run = RunDir(sys.argv[1], write=True); print("holding", flush=True); sys.stdin.read()')


def hold(env, workdir) -> subprocess.Popen:
    """Another process that holds ``workdir`` as its writer until its stdin closes."""
    proc = subprocess.Popen([sys.executable, '-c', HOLD, workdir], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == 'holding', proc.stderr.read()
    return proc


def test_a_second_training_is_refused_naming_the_holder_and_touches_nothing(
        reference, data_root, env, tmp_path):
    workdir = copy_run(reference, tmp_path)
    holder = hold(env, workdir)
    try:
        before = snapshot(workdir)
        # The same run, longer; and another config in the same folder.
        procs = [start(env, *train_args(data_root, workdir, *RUN, '--config.train.num_steps=12')),
                 start(env, *train_args(data_root, workdir, *RUN, STEPS, '--config.loss.alpha=0'))]
        for proc in map(finish, procs):
            assert_one_line_error(proc, 'train', workdir, f'in use by process {holder.pid} ',
                                  'another --workdir')
        assert snapshot(workdir) == before
        # Readers do not need the lock.
        assert RunDir(workdir).read_config().train.num_steps == 8
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0


def test_the_lock_of_a_killed_process_does_not_block_the_next_writer(reference, env, tmp_path):
    workdir = copy_run(reference, tmp_path)
    holder = hold(env, workdir)
    with pytest.raises(UserError, match=f'in use by process {holder.pid} '):
        RunDir(workdir, write=True)
    holder.kill()                  # SIGKILL: no chance to clean up
    holder.wait(timeout=60)
    with RunDir(workdir, write=True):
        with open(os.path.join(workdir, '.lock')) as f:
            assert f.read().startswith(f'process {os.getpid()} ')
    with RunDir(workdir, write=True):   # and released again on close
        pass


# ---------------------------------------------------------------------------------------------
# 2. Damaged checkpoints: the newest intact one, with a one-line warning per damaged step

@pytest.fixture(scope='module')
def damaged(reference, tmp_path_factory):
    """The reference run with a byte of step 8's arrays flipped (orbax would load it) and a
    data file of step 6 cut in half."""
    workdir = copy_run(reference, tmp_path_factory.mktemp('damaged'))
    flip_a_byte_orbax_loads(workdir, 8)
    truncate(data_files(workdir, 6)[0])
    return workdir


def test_resume_falls_back_past_damaged_checkpoints_and_reaches_the_same_result(
        reference, damaged, data_root, env, tmp_path):
    workdir = copy_run(damaged, tmp_path)
    proc = wtal(env, *train_args(data_root, workdir, *RUN, STEPS))
    assert_ok(proc)
    lines = proc.stderr.strip().splitlines()
    warned = [line for line in lines if line.startswith('warning: ')]
    assert len(warned) == 2, proc.stderr
    assert 'step 8: checksum mismatch in' in warned[0] and 'falling back to step 6' in warned[0]
    assert 'step 6: arrays unreadable' in warned[1] and 'falling back to step 4' in warned[1]
    assert f'resuming from step 4 in {workdir}' in lines
    # The damaged steps are kept aside, out of the run's checkpoints.
    aside = os.path.join(workdir, 'damaged_checkpoints')
    assert sorted(os.listdir(aside)) == ['6', '8']
    assert all(str(os.path.join(aside, s)) in w for s, w in zip(('8', '6'), warned))
    # Steps 5-8 trained again: the parameters and rows of the uninterrupted run.
    assert saved_steps(workdir) == [2, 4, 6, 8]
    for a, b in zip(jax.tree.leaves(params_of(reference)), jax.tree.leaves(params_of(workdir))):
        assert np.array_equal(a, b)
    assert without_timing(rows_of(workdir)) == without_timing(rows_of(reference))


def test_evaluate_and_detect_fall_back_to_the_newest_intact_step(reference, damaged, data_root,
                                                                 env, tmp_path):
    before = snapshot(os.path.join(damaged, 'checkpoints'))
    video = sorted(os.listdir(os.path.join(data_root, 'features', 'test', 'rgb')))[0]
    spec = ','.join(os.path.join(data_root, 'features', 'test', s, video) for s in ('rgb', 'flow'))
    out = tmp_path / 'detections.json'
    evaluate = start(env, 'evaluate', '--workdir', damaged, '--which', 'latest', '--quiet',
                     cwd=str(tmp_path))
    detect = start(env, 'detect', '--checkpoint', damaged, '--which', 'latest', '--output', out,
                   spec, cwd=str(tmp_path))
    for proc in map(finish, (evaluate, detect)):
        assert_ok(proc)
        warned = warnings_of(proc)
        assert len(warned) == 2
        assert 'step 8: checksum mismatch' in warned[0] and 'falling back to step 6' in warned[0]
        assert 'step 6: arrays unreadable' in warned[1] and 'falling back to step 4' in warned[1]
    # Readers move nothing; step 4's figures are those the training logged at step 4.
    assert snapshot(os.path.join(damaged, 'checkpoints')) == before
    with open(os.path.join(damaged, 'metrics_test.json')) as f:
        evaluated = json.load(f)
    logged = next(r for r in rows_of(reference) if r['step'] == 4 and r['split'] == 'test')
    assert evaluated['step'] == 4
    assert evaluated['average_mAP'] == pytest.approx(logged['average_mAP'], abs=1e-9)
    assert json.loads(out.read_text())['results'].keys() == {video[:-len('.npy')]}


def test_with_every_step_damaged_each_command_is_one_line_and_changes_nothing(
        reference, data_root, env, tmp_path):
    workdir = copy_run(reference, tmp_path)
    for step in saved_steps(workdir):
        for path in data_files(workdir, step):
            truncate(path)
    before = snapshot(workdir, lock=False)
    procs = {'evaluate': start(env, 'evaluate', '--workdir', workdir, '--quiet'),
             'train': start(env, *train_args(data_root, workdir, *RUN, STEPS))}
    for command, proc in procs.items():
        line = assert_one_line_error(finish(proc), command, 'no intact checkpoint')
        for step in (2, 4, 6, 8):
            assert f'step {step}: arrays unreadable' in line
    assert snapshot(workdir, lock=False) == before


def test_the_divergence_message_names_an_intact_checkpoint(data_root, env, tmp_path):
    """Step 5's rate of 1e30 makes step 6's loss non-finite. The first run stops at step 4
    (checkpoints 2 and 4); step 4 is then damaged, and the run resumed from step 2 with no
    checkpoint on the way: the last good checkpoint is step 2, not the damaged step 4."""
    workdir = str(tmp_path / 'run')
    rates = '--config.optim.lr_list=[0.001,0.001,0.001,0.001,1e30]'
    common = ['--config.train.log_every_steps=1', '--config.eval.every_steps=100', rates]
    assert_ok(wtal(env, *train_args(data_root, workdir, *common, '--config.train.num_steps=4',
                                    '--config.checkpoint.every_steps=2')))
    assert saved_steps(workdir) == [2, 4]
    flip_a_byte_orbax_loads(workdir, 4)
    proc = wtal(env, *train_args(data_root, workdir, *common, '--config.train.num_steps=8',
                                 '--config.checkpoint.every_steps=1000'))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    warned = [line for line in lines if line.startswith('warning: ')]
    assert len(warned) == 1 and 'step 4: checksum mismatch' in warned[0]
    assert lines[-1] == (f'wtal-jax train: error: non-finite loss between steps 6 and 6; last '
                         f'good checkpoint: step 2 in {workdir}')
    assert 'Traceback' not in proc.stderr
    assert saved_steps(workdir) == [2]
    state = params_of(workdir)       # the step named restores intact
    assert int(state.step) == 2


def _small_state(value):
    # Large enough (and random enough) to be stored in data files, not inline in orbax's index.
    rng = np.random.default_rng(value)
    return {'w': rng.standard_normal((64, 48)).astype(np.float32),
            'n': np.arange(5, dtype=np.int32) * value}


def _small_run(path, steps=(1, 2, 3)):
    """A run folder with small checkpoints at ``steps`` (each with selection metrics)."""
    cfg = config.load_config(CONFIG, TINY + ['--config.checkpoint.keep=10'])
    with RunDir(path, write=True) as run:
        run.write_config(cfg)
        run.manager(cfg)
        for step in steps:
            state = _small_state(step)
            run.save(step, state, {'checksums': checkpoints.checksums(state)[0]},
                     {'selection/average_mAP': [0.1 * step]})
    return cfg


def _edit_json(path, change):
    with open(path) as f:
        value = json.load(f)
    change(value)
    with open(path, 'w') as f:
        json.dump(value, f)


def _garbage(path):
    with open(path, 'w') as f:
        f.write('{"not json')


# name -> (damage done to checkpoints/3, words of the warning)
DAMAGE = {
    'meta_not_json': (lambda d: _garbage(f'{d}/meta/metadata'), 'meta unreadable'),
    'meta_missing': (lambda d: shutil.rmtree(f'{d}/meta'), 'meta unreadable'),
    'no_checksums': (lambda d: _edit_json(f'{d}/meta/metadata', lambda m: m.pop('checksums')),
                     'no checksums recorded'),
    'checksum_edited': (lambda d: _edit_json(f'{d}/meta/metadata',
                                             lambda m: m['checksums'].update({"['w']": 1})),
                        "checksum mismatch in ['w']"),
    'state_missing': (lambda d: shutil.rmtree(f'{d}/state'), 'arrays unreadable'),
    'tree_metadata_not_json': (lambda d: _garbage(f'{d}/state/_METADATA'), 'arrays unreadable'),
    'index_truncated': (lambda d: [truncate(p) for p in glob.glob(f'{d}/state/d/*')],
                        'arrays unreadable'),
    'data_files_deleted': (lambda d: [os.remove(p) for p in
                                      glob.glob(f'{d}/state/ocdbt.process_*/d/*')],
                           'arrays unreadable'),
    'data_files_truncated': (lambda d: [truncate(p) for p in
                                        glob.glob(f'{d}/state/ocdbt.process_*/d/*')],
                             'arrays unreadable'),
}


@pytest.mark.parametrize('case', sorted(DAMAGE))
def test_a_damaged_item_of_the_newest_step_is_skipped_with_one_warning(case, tmp_path, capsys):
    path = str(tmp_path / 'run')
    _small_run(path)
    damage, words = DAMAGE[case]
    damage(os.path.join(path, 'checkpoints', '3'))
    abstract = on_one_device(_small_state(0))
    with RunDir(path) as run:
        state, _, step = run.restore(abstract)
    assert step == 2 and np.array_equal(state['w'], _small_state(2)['w'])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('warning: '), err
    assert f'step 3: {words}' in err[0] and 'falling back to step 2' in err[0]
    # A writer (a resumed training) sets the damaged step aside, out of the way of its saves.
    cfg = config.load_config(CONFIG, TINY + ['--config.checkpoint.keep=10'])
    with RunDir(path, write=True) as run:
        run.manager(cfg)
        _, _, step = run.restore(abstract, quiet=True)
        assert step == 2 and run.steps() == [1, 2]
        state = _small_state(3)
        run.save(3, state, {'checksums': checkpoints.checksums(state)[0]}, None)
    assert os.listdir(os.path.join(path, 'damaged_checkpoints')) == ['3']
    with RunDir(path) as run:
        assert run.restore(abstract)[2] == 3


def test_a_step_with_unreadable_metrics_is_left_out_of_the_best_and_set_aside_by_a_writer(
        tmp_path, capsys):
    path = str(tmp_path / 'run')
    cfg = _small_run(path)
    _garbage(os.path.join(path, 'checkpoints', '3', 'metrics', 'metrics'))
    with RunDir(path) as run:   # a reader: evaluate, detect, plot
        assert run.steps() == [1, 2, 3]
        assert run.best_step('selection/average_mAP', 'max') == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'step 3: metrics unreadable' in err[0], err
    with RunDir(path, write=True) as run:   # a writer needs every step's metrics to keep the best
        run.manager(cfg)
        assert run.steps() == [1, 2]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'step 3: metrics unreadable' in err[0] and 'moved to' in err[0]


def test_every_step_damaged_is_one_error(tmp_path):
    path = str(tmp_path / 'run')
    _small_run(path, steps=(1, 2))
    for step in (1, 2):
        _garbage(os.path.join(path, 'checkpoints', str(step), 'meta', 'metadata'))
    with RunDir(path) as run:
        with pytest.raises(UserError, match='no intact checkpoint .step 2: meta unreadable .*; '
                                            'step 1: meta unreadable') as info:
            run.restore(on_one_device(_small_state(0)))
    assert '\n' not in str(info.value)


# ---------------------------------------------------------------------------------------------
# 3. metrics.jsonl

def test_a_torn_last_metrics_line_is_dropped_by_resume_and_plot(reference, data_root, env,
                                                                tmp_path):
    workdir = copy_run(reference, tmp_path)
    with open(os.path.join(workdir, METRICS_FILE), 'a') as f:
        f.write('{"step": 9, "split": "tr')
    torn = f'dropped a torn last line {len(rows_of(reference)) + 1} '
    plot = start(env, 'plot', '--workdir', workdir, '--which', 'latest', '--quiet',
                 '--out', tmp_path / 'plots')
    proc = finish(plot)
    assert_ok(proc)
    assert len(warnings_of(proc)) == 1 and torn in proc.stderr
    assert os.path.isfile(tmp_path / 'plots' / 'curves_seed0.png')
    resume = wtal(env, *train_args(data_root, workdir, *RUN, STEPS))
    assert_ok(resume)
    assert torn in resume.stderr
    with open(os.path.join(workdir, METRICS_FILE)) as f, \
            open(os.path.join(reference, METRICS_FILE)) as g:
        assert f.read() == g.read()   # the torn line is gone; nothing else changed


def test_a_damaged_metrics_line_before_the_last_is_one_line_and_changes_nothing(
        reference, data_root, env, tmp_path):
    workdir = copy_run(reference, tmp_path)
    path = os.path.join(workdir, METRICS_FILE)
    with open(path) as f:
        lines = f.readlines()
    lines[1] = lines[1][:20] + '\n'
    with open(path, 'w') as f:
        f.writelines(lines)
    before = snapshot(workdir, lock=False)
    procs = {'train': start(env, *train_args(data_root, workdir, *RUN,
                                             '--config.train.num_steps=12')),
             'plot': start(env, 'plot', '--workdir', workdir, '--quiet', '--out',
                           tmp_path / 'plots')}
    for command, proc in procs.items():
        assert_one_line_error(finish(proc), command, path, 'line 2 is not a metrics row')
    assert snapshot(workdir, lock=False) == before


def test_rows_of_a_run_killed_before_its_first_checkpoint_are_not_repeated(data_root, env,
                                                                           tmp_path):
    workdir = str(tmp_path / 'run')
    path = os.path.join(workdir, METRICS_FILE)
    killed = start(env, *train_args(data_root, workdir, '--config.train.log_every_steps=1',
                                    '--config.checkpoint.every_steps=1000',
                                    '--config.eval.every_steps=1000',
                                    '--config.train.num_steps=1000'))
    deadline = time.monotonic() + 240
    while not (os.path.exists(path) and open(path).read().count('\n') >= 3):
        assert killed.poll() is None and time.monotonic() < deadline, killed.stderr.read()
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert not saved_steps(workdir)
    first = without_timing(rows_of(workdir))
    assert len(first) >= 3
    proc = wtal(env, *train_args(data_root, workdir, '--config.train.log_every_steps=1',
                                 '--config.checkpoint.every_steps=1000',
                                 '--config.eval.every_steps=2', '--config.train.num_steps=2'))
    assert_ok(proc)
    rows = without_timing(rows_of(workdir))
    assert [(r['step'], r['split']) for r in rows] == [
        (1, 'train'), (2, 'train'), (2, 'selection'), (2, 'test')]
    assert rows[:2] == first[:2]   # the same steps again, once


def test_restart_keeps_the_rows_up_to_the_restored_step(tmp_path, capsys):
    path = str(tmp_path / 'run')
    rows = [{'step': s, 'split': 'train', 'loss': 0.5 * s} for s in (1, 2, 3, 4)]
    with RunDir(path, write=True) as run:
        for row in rows:
            run.append_metrics(row)
        with open(run.metrics_path, 'a') as f:
            f.write('{"step": 5, "spl')
        run.restart_metrics(2)
        assert run.read_metrics() == rows[:2]
        assert 'torn last line 5' in capsys.readouterr().err
        run.restart_metrics(0)           # a fresh start keeps none, even of a damaged file
        assert run.read_metrics() == []
        with open(run.metrics_path, 'w') as f:
            f.write('garbage\n{"step": 1}\n')
        run.restart_metrics(0)
        with open(run.metrics_path) as f:
            assert f.read() == ''


# ---------------------------------------------------------------------------------------------
# 7. A run folder that is a file, a tampered config, a full disk

def test_a_run_folder_that_is_a_file_is_one_line_for_every_command(reference, data_root, env,
                                                                   tmp_path):
    path = tmp_path / 'run'
    path.write_text('not a folder')
    spec = glob.glob(os.path.join(data_root, 'features', 'test', 'rgb', '*.npy'))[0]
    is_a_file = [str(path), 'exists and is not a folder']
    commands = {   # name -> (arguments, words of the message)
        'train': (train_args(data_root, path, STEPS), is_a_file),
        'evaluate': (['evaluate', '--workdir', path], is_a_file),
        'detect': (['detect', '--checkpoint', path, '--output', tmp_path / 'd.json', spec],
                   is_a_file),
        'train into a file': (train_args(data_root, path / 'run', STEPS),
                              [str(path / 'run'), 'cannot create the run folder',
                               'Not a directory']),
    }
    if importlib.util.find_spec('matplotlib'):   # the [viz] extra
        commands['plot'] = (['plot', '--workdir', path], is_a_file)
    if importlib.util.find_spec('torch'):        # the [torch] extra
        commands['export-torch'] = (['export-torch', '--workdir', path, tmp_path / 'model.pkl'],
                                    is_a_file)
    procs = {name: start(env, *args) for name, (args, _) in commands.items()}
    for name, proc in procs.items():
        assert_one_line_error(finish(proc), name.split()[0], *commands[name][1])
    assert path.read_text() == 'not a folder'
    assert sorted(os.listdir(tmp_path)) == ['run']


def _tampered(reference, tmp_path, text) -> str:
    workdir = copy_run(reference, tmp_path)
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
        f.write(text)
    return workdir


def test_a_tampered_config_is_one_line(reference, data_root, env, tmp_path):
    with open(os.path.join(reference, 'config.json')) as f:
        saved = json.load(f)
    bad = json.loads(json.dumps(saved))
    bad['train']['batch_size'] = -3
    bad['optim']['learning_rate'] = 'fast'
    cases = {
        'bad_values': (json.dumps(bad), ['train.batch_size=-3', "optim.learning_rate='fast'"]),
        'not_json': ('{"train": {', ['unreadable config']),
        'not_an_object': ('[1, 2]', ['expected a JSON object']),
        # Deeper than the JSON parser goes; parsed, but deep enough for the config to recurse
        # (under Python's default recursion limit); deeper than any config, far from the limit.
        'nested_100000': ('[' * 100000 + ']' * 100000, ['nested too deeply']),
        'nested_900': ('{"a": ' * 900 + '1' + '}' * 900, ['nested too deeply']),
        'nested_10': (json.dumps(dict(saved, train=dict(saved['train'], batch_size=[[[[[[[[
            1]]]]]]]]))), ['nested too deeply']),
    }
    limit = sys.getrecursionlimit()
    for name, (text, words) in cases.items():
        workdir = _tampered(reference, tmp_path, text)
        for recursion_limit in (1000, 10000):   # the same answer whatever the limit
            sys.setrecursionlimit(recursion_limit)
            try:
                with pytest.raises(UserError) as info:
                    RunDir(workdir).read_config()
            finally:
                sys.setrecursionlimit(limit)
            message = str(info.value)
            assert '\n' not in message
            assert message.startswith(os.path.join(workdir, 'config.json'))
            assert all(w in message for w in words), (name, recursion_limit, message)
        shutil.rmtree(workdir)
    workdir = _tampered(reference, tmp_path, cases['nested_900'][0])
    before = snapshot(workdir, lock=False)
    procs = {'evaluate': start(env, 'evaluate', '--workdir', workdir),
             'train': start(env, 'train', '--workdir', workdir)}
    for command, proc in procs.items():
        assert_one_line_error(finish(proc), command, 'config.json', 'nested too deeply')
    assert snapshot(workdir, lock=False) == before


@pytest.fixture
def small_disk(tmpfs):
    """A 1 MiB tmpfs: room for a few checkpoints of the tiny run."""
    return tmpfs('1m')


def test_a_full_disk_during_a_checkpoint_save_is_one_line_and_keeps_the_earlier_steps(
        small_disk, data_root, env):
    workdir = str(small_disk / 'run')
    # A checkpoint every step, all kept, nothing else written while training: the disk fills
    # up during one of the asynchronous saves.
    proc = wtal(env, *train_args(data_root, workdir, '--config.checkpoint.every_steps=1',
                                 '--config.checkpoint.keep=1000', '--config.train.num_steps=200',
                                 '--config.train.log_every_steps=1000',
                                 '--config.eval.every_steps=1000'))
    line = assert_one_line_error(proc, 'train', os.path.join(workdir, 'checkpoints'),
                                 'No space left on device', 'not saved', status=1)
    steps = saved_steps(workdir)
    assert steps and steps == list(range(1, len(steps) + 1))
    assert f'step {len(steps) + 1} not saved' in line
    for step in steps:        # each one restores intact, checksums verified
        assert int(params_of(workdir, step).step) == step


# ---------------------------------------------------------------------------------------------
# Other mistakes about run directories and their commands (rows of the README's table)

def _no_config(reference, tmp_path):
    folder = tmp_path / 'empty'
    folder.mkdir()
    return [str(folder)], ['config.json: not found', 'a wtal_jax run directory?']


def _no_checkpoints(reference, tmp_path):
    workdir = copy_run(reference, tmp_path)
    shutil.rmtree(os.path.join(workdir, 'checkpoints'))
    return [workdir], [workdir, 'no checkpoint in checkpoints/']


def _checkpoints_is_a_file(reference, tmp_path):
    workdir = copy_run(reference, tmp_path)
    shutil.rmtree(os.path.join(workdir, 'checkpoints'))
    with open(os.path.join(workdir, 'checkpoints'), 'w') as f:
        f.write('x')
    return [workdir], [os.path.join(workdir, 'checkpoints'), 'exists and is not a folder']


def _step_not_saved(reference, tmp_path):
    return ['--checkpoint', os.path.join(reference, 'checkpoints', '5')], [
        'no checkpoint at step 5 (saved: 2, 4, 6, 8)']


# name -> (argv after the command name, from (reference, tmp_path): (more argv, words))
RUN_MISTAKES = {
    'evaluate, no such folder': (
        ['evaluate', '--workdir'],
        lambda r, t: ([str(t / 'nope')], ['nope: no such run directory'])),
    'evaluate, no config.json': (['evaluate', '--workdir'], _no_config),
    'evaluate, no checkpoints': (['evaluate', '--workdir'], _no_checkpoints),
    'evaluate, checkpoints is a file': (
        ['evaluate', '--workdir'],
        lambda r, t: (_checkpoints_is_a_file(r, t)[0], ['no checkpoint in checkpoints/'])),
    'train, checkpoints is a file': (['train', '--quiet', '--workdir'], _checkpoints_is_a_file),
    'evaluate, a step not saved': (['evaluate'], _step_not_saved),
    'evaluate, an unknown split': (
        ['evaluate', '--split', 'validation', '--workdir'],
        lambda r, t: ([r], ["no split 'validation': one of test, selection, train"])),
    'evaluate, no workdir': (['evaluate'], lambda r, t: ([], ['evaluate needs --workdir'])),
    'train, bad --seeds': (
        ['train', '--seeds', '0,0', '--workdir'],
        lambda r, t: ([r], ['--seeds 0,0: expected distinct non-negative seeds'])),
    'detect, one video id twice': (
        ['detect', '--which', 'latest', '--checkpoint'],
        lambda r, t: ([r, '--output', str(t / 'd.json'), str(t / 'a' / 'v.npy'),
                       str(t / 'b' / 'v.npy')],
                      ["the same video id comes from several files: ['v']"])),
}


@pytest.mark.parametrize('case', sorted(RUN_MISTAKES))
def test_run_directory_mistakes_are_one_line(case, reference, tmp_path, capsys):
    from wtal_jax import cli
    argv, make = RUN_MISTAKES[case]
    more, words = make(reference, tmp_path)
    before = snapshot(reference)
    status = cli.main([*argv, *more])
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if not line.startswith(INFORMATION)]
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith(f'wtal-jax {argv[0]}: error: '), err
    for word in words:
        assert word in err[0], (word, err[0])
    assert snapshot(reference) == before


# ---------------------------------------------------------------------------------------------
# The run-directory holes of the hostile user's issue

def test_deleting_the_lock_file_lets_no_second_writer_in(reference, data_root, env, tmp_path):
    """The writer locks the run folder itself: ``rm RUN/.lock`` (the file only names the
    holder) leaves the run locked, and a second writer is refused, touching nothing."""
    workdir = copy_run(reference, tmp_path)
    holder = hold(env, workdir)
    try:
        os.remove(os.path.join(workdir, '.lock'))
        before = snapshot(workdir)
        proc = wtal(env, *train_args(data_root, workdir, *RUN, '--config.train.num_steps=12'))
        assert_one_line_error(proc, 'train', workdir, 'in use by another process',
                              'another --workdir')
        assert snapshot(workdir) == before
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0


def test_a_training_whose_lock_file_is_deleted_stays_the_only_writer(data_root, env, tmp_path):
    """The issue's case with a real training: its lock file deleted while it trains, the same
    command again is refused in one line; the first goes on alone (one writer's rows)."""
    workdir = str(tmp_path / 'run')
    args = train_args(data_root, workdir, '--config.train.num_steps=100000',
                      '--config.train.log_every_steps=5', '--config.eval.every_steps=1000',
                      '--config.checkpoint.every_steps=5', '--config.checkpoint.keep=1')
    first = start(env, *args)
    try:
        deadline = time.monotonic() + 240
        while not (os.path.isdir(os.path.join(workdir, 'checkpoints')) and saved_steps(workdir)):
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
            time.sleep(0.05)
        os.remove(os.path.join(workdir, '.lock'))
        second = wtal(env, *args)
        assert_one_line_error(second, 'train', workdir, 'in use by another process')
        assert first.poll() is None   # still training, alone
        rows_before = len(rows_of(workdir))
        while len(rows_of(workdir)) < rows_before + 2:
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        first.kill()
        first.communicate()
    rows = rows_of(workdir)   # read_metrics refuses rows of two writers
    steps = [r['step'] for r in rows]
    assert steps == list(range(5, 5 * len(rows) + 1, 5))


def test_where_a_folder_cannot_be_locked_a_deleted_lock_file_stops_the_writer(tmp_path,
                                                                             monkeypatch):
    """On a file system that cannot lock a folder (NFS) the lock file is locked, and a writer
    checks before each write that it is still the file it locked."""
    from wtal_jax import io_utils
    monkeypatch.setattr(io_utils, '_lock_folder', lambda folder: None)
    path = str(tmp_path / 'run')
    with RunDir(path, write=True) as first:
        first.append_metrics({'step': 1, 'split': 'train', 'seed': 0, 'loss': 1.0})
        with pytest.raises(UserError, match='in use by process'):
            RunDir(path, write=True)
        os.remove(os.path.join(path, '.lock'))
        with RunDir(path, write=True):   # the newcomer the deleted file let in...
            pass
        with pytest.raises(UserError) as info:   # ...stops the first at its next write
            first.append_metrics({'step': 2, 'split': 'train', 'seed': 0, 'loss': 1.0})
        assert str(info.value) == (f'{os.path.join(path, ".lock")}: removed or replaced while '
                                   'this process held it, so another may be writing here now; '
                                   'stopped')
    assert rows_of(path) == [{'step': 1, 'split': 'train', 'seed': 0, 'loss': 1.0}]


def _append_lines(workdir, lines):
    with open(os.path.join(workdir, METRICS_FILE), 'a') as f:
        f.writelines(lines)


def test_a_metrics_log_of_two_writers_is_refused_on_resume_and_changes_nothing(
        reference, data_root, env, tmp_path):
    with open(os.path.join(reference, METRICS_FILE)) as f:
        lines = f.readlines()
    cases = {   # a second writer's rows from step 1 again; the last evaluation written twice
        'steps go back': (lines, f'line {len(lines) + 1} has step 3 after step 8'),
        'a row twice': (lines[-1:], f'line {len(lines) + 1} repeats the test row of step 8 '
                                    'of seed 0'),
    }
    for name, (extra, words) in cases.items():
        workdir = copy_run(reference, tmp_path, name.replace(' ', '_'))
        _append_lines(workdir, extra)
        before = snapshot(workdir, lock=False)
        procs = {'train': start(env, *train_args(data_root, workdir, *RUN,
                                                 '--config.train.num_steps=12'))}
        if importlib.util.find_spec('matplotlib'):   # the [viz] extra
            procs['plot'] = start(env, 'plot', '--workdir', workdir, '--quiet', '--out',
                                  tmp_path / 'plots')
        for command, proc in procs.items():
            assert_one_line_error(finish(proc), command, os.path.join(workdir, METRICS_FILE),
                                  words, 'rows of two writers', 'a new --workdir')
        assert snapshot(workdir, lock=False) == before


def test_rows_of_two_writers_past_the_restored_step_are_dropped_as_any_such_rows(
        reference, data_root, env, tmp_path):
    """A resume drops every row past the step it restores: a second writer's rows there are
    dropped with them, and the run ends as the uninterrupted one."""
    workdir = copy_run(reference, tmp_path)
    shutil.rmtree(os.path.join(workdir, 'checkpoints', '8'))
    with open(os.path.join(workdir, METRICS_FILE)) as f:
        lines = f.readlines()
    _append_lines(workdir, [line for line in lines if json.loads(line)['step'] > 6])
    assert_ok(wtal(env, *train_args(data_root, workdir, *RUN, STEPS)))
    assert without_timing(rows_of(workdir)) == without_timing(rows_of(reference))


def test_resuming_with_fewer_steps_than_trained_is_refused_and_changes_nothing(
        reference, data_root, env, tmp_path):
    """Trained to step 8, the same command with num_steps=4 would report 4 steps of a run
    holding step 8 (and save num_steps=4 as its config): refused, naming step 8."""
    workdir = copy_run(reference, tmp_path)
    before = snapshot(workdir)
    proc = wtal(env, *train_args(data_root, workdir, *RUN, '--config.train.num_steps=4'))
    assert_one_line_error(proc, 'train', workdir, 'has trained to step 8',
                          'past train.num_steps=4', '--config.train.num_steps=8 or more',
                          f'evaluate --checkpoint {os.path.join(workdir, "checkpoints")}/STEP',
                          'a new --workdir')
    assert snapshot(workdir) == before
    # The same length again is a finished run's resumption: nothing to train, the same report.
    assert_ok(wtal(env, *train_args(data_root, workdir, *RUN, STEPS)))
    with open(os.path.join(workdir, 'report.json')) as f, \
            open(os.path.join(reference, 'report.json')) as g:
        assert json.load(f) == json.load(g)


@pytest.mark.parametrize('mode', ['max', 'min'])
def test_on_tied_metrics_the_report_evaluate_and_the_kept_checkpoint_agree(
        mode, data_root, env, tmp_path, capsys):
    """A learning rate of 1e-30 leaves the parameters as they were (float32), so every
    evaluation ties: the report selects the earliest step, that step is the one kept on disk
    (besides the latest), and ``evaluate`` (its best by default) evaluates it."""
    from wtal_jax import cli
    workdir = str(tmp_path / 'run')
    assert_ok(wtal(env, *train_args(data_root, workdir, '--config.optim.learning_rate=1e-30',
                                    '--config.train.num_steps=6', '--config.eval.every_steps=2',
                                    '--config.checkpoint.every_steps=2',
                                    '--config.checkpoint.keep=1',
                                    f'--config.checkpoint.best_mode={mode}')))
    selection = [r['average_mAP'] for r in rows_of(workdir) if r['split'] == 'selection']
    assert len(selection) == 3 and len(set(selection)) == 1   # the tie
    with open(os.path.join(workdir, 'report.json')) as f:
        assert json.load(f)['per_seed'][0]['selected']['step'] == 2
    assert saved_steps(workdir) == [2, 6]
    assert cli.main(['evaluate', '--workdir', workdir, '--quiet']) == 0
    assert 'test split, checkpoint step 2, seed 0' in capsys.readouterr().out


def test_readers_never_call_a_checkpoint_damaged_while_a_training_writes_them(
        data_root, env, tmp_path, capsys):
    """``evaluate --which latest`` (and ``load_checkpoint`` under it) in a loop while a training
    saves a checkpoint every step and deletes the one before (``checkpoint.keep=1``): a step
    that vanishes or is half deleted while read is no damaged step. Every read succeeds, without
    a warning, on ever newer steps, and nothing is moved aside."""
    from wtal_jax import cli
    workdir = str(tmp_path / 'run')
    writer = start(env, *train_args(data_root, workdir, '--config.train.num_steps=100000',
                                    '--config.checkpoint.every_steps=1',
                                    '--config.checkpoint.keep=1',
                                    '--config.train.log_every_steps=1000',
                                    '--config.eval.every_steps=100000'))
    steps = []
    try:
        deadline = time.monotonic() + 240
        while not (os.path.isdir(os.path.join(workdir, 'checkpoints')) and saved_steps(workdir)):
            assert writer.poll() is None and time.monotonic() < deadline, writer.stderr.read()
            time.sleep(0.05)
        for _ in range(40):
            steps.append(rundir.load_checkpoint(workdir, which='latest').step)
        for _ in range(2):
            assert cli.main(['evaluate', '--workdir', workdir, '--which', 'latest',
                             '--quiet']) == 0
        assert writer.poll() is None, writer.stderr.read()
    finally:
        writer.kill()
        writer.communicate()
    err = capsys.readouterr().err
    assert err == '', err
    assert steps == sorted(steps) and steps[-1] > steps[0] + 10, steps
    assert not os.path.exists(os.path.join(workdir, 'damaged_checkpoints'))


def test_evaluate_with_a_chunk_too_large_for_memory_is_refused_before_any_work(
        reference, capsys):
    """Was numpy's _ArrayMemoryError (5.82 TiB) after loading the split: now one line with
    the estimate and the limit, and the run untouched."""
    from wtal_jax import cli
    before = snapshot(reference)
    status = cli.main(['evaluate', '--workdir', reference, '--quiet',
                       '--config.eval.chunk_segments=100000000000'])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1, err
    # 10^11 segments x (D + E = 16 + 32) float32 values: 19.2e12 bytes = 17.5 TiB.
    assert err[0].startswith('wtal-jax evaluate: error: evaluate needs at least 17.5 TiB of '
                             'memory (parameters '), err[0]
    assert 'of host memory available; lower eval.chunk_segments' in err[0]
    assert snapshot(reference) == before


def test_a_run_config_with_an_integer_too_long_for_python_is_one_line(reference, env, tmp_path):
    """An integer longer than Python's int-to-string limit in config.json (was a ValueError
    traceback from json.load): one line from every command reading it; nothing changed."""
    digits = sys.get_int_max_str_digits() + 1
    with open(os.path.join(reference, 'config.json')) as f:
        text = f.read().replace('"num_steps": 8', '"num_steps": 1' + '0' * (digits - 1))
    workdir = _tampered(reference, tmp_path, text)
    before = snapshot(workdir)
    procs = {'evaluate': start(env, 'evaluate', '--workdir', workdir),
             'train': start(env, 'train', '--workdir', workdir, '--quiet'),
             'detect': start(env, 'detect', '--checkpoint', workdir, '--output',
                             tmp_path / 'd.json', tmp_path / 'v.npy')}
    for command, proc in procs.items():
        assert_one_line_error(finish(proc), command, os.path.join(workdir, 'config.json'),
                              f'an integer of {digits} digits; Python reads at most '
                              f'{sys.get_int_max_str_digits()} digits')
    assert snapshot(workdir) == before


def test_a_runs_config_json_given_as_config_trains_the_same_run(reference, env, tmp_path):
    """``--config RUN/config.json`` is accepted deliberately: the run's settings as a new
    run's config, which trains the same run."""
    workdir = str(tmp_path / 'again')
    proc = wtal(env, 'train', '--config', os.path.join(reference, 'config.json'), '--workdir',
                workdir, '--quiet')
    assert_ok(proc)
    assert without_timing(rows_of(workdir)) == without_timing(rows_of(reference))
    assert RunDir(workdir).read_config() == RunDir(reference).read_config()


def test_a_run_folder_path_that_is_not_utf8_is_refused_before_training(data_root, tmp_path,
                                                                       capsys):
    """Was a RuntimeError traceback from Orbax's array store at the first save, a run folder
    half written; now one line before anything, for train and for readers."""
    from wtal_jax import cli
    workdir = os.fsdecode(os.fsencode(str(tmp_path)) + b'/run\xff\xfe')
    shown = str(tmp_path) + '/run\\xff\\xfe'
    for argv in (train_args(data_root, workdir, STEPS), ['evaluate', '--workdir', workdir]):
        status = cli.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert status == 2 and len(err) == 1, err
        assert err[0] == (f'wtal-jax {argv[0]}: error: {shown}: not valid UTF-8 (byte 0xff at '
                          f'{len(os.fsencode(str(tmp_path))) + 4}); the checkpoints\' array '
                          'store takes UTF-8 paths only: choose a run folder with a UTF-8 path')
    assert os.listdir(tmp_path) == []


def _fill(folder):
    """Writes into ``folder`` until its file system is full."""
    fd = os.open(os.path.join(folder, 'fill'), os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b'\0' * 4096)
    except OSError as e:
        assert e.errno == 28   # ENOSPC
    finally:
        os.close(fd)


def test_a_full_disk_before_the_first_write_names_the_file_and_leaves_nothing(tmpfs, data_root,
                                                                             env):
    """Was 'wtal-jax train: error: No space left on device' and an empty run folder."""
    disk = tmpfs('64k')
    _fill(disk)
    workdir = str(disk / 'run')
    proc = wtal(env, *train_args(data_root, workdir, STEPS))
    assert_one_line_error(proc, 'train', f'{os.path.join(workdir, ".lock")}: No space left on '
                          'device (writing the lock file that names this process)', status=1)
    assert os.listdir(disk) == ['fill']


def test_a_read_only_run_folder_is_refused_before_evaluating(reference, tmpfs, capsys,
                                                             monkeypatch):
    """Was a whole evaluation, then 'Read-only file system' at the results file; now the
    folder is found read-only first (as root too, whom permission bits do not stop)."""
    from wtal_jax import cli
    from wtal_jax.runs import evaluate
    disk = tmpfs('8m')
    workdir = copy_run(reference, disk)
    subprocess.run(['mount', '-o', 'remount,ro', str(disk)], check=True)
    before = snapshot(workdir)

    def no_evaluation(*args, **kwargs):
        raise AssertionError('evaluated a run whose results cannot be written')

    monkeypatch.setattr(evaluate, 'Evaluator', no_evaluation)
    status = cli.main(['evaluate', '--workdir', workdir, '--quiet'])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and err == [
        f'wtal-jax evaluate: error: {workdir}: Read-only file system (evaluate writes its '
        'results into the run folder; nothing evaluated)'], err
    assert snapshot(workdir) == before


def test_resuming_one_seed_given_as_seeds_1_is_the_same_run(reference, data_root, env, tmp_path):
    """``--seeds 1`` (the seeds 0..0) on a run trained with seed 0 was refused as
    'seeds: [] -> [0]'; the seeds are compared as trained, so it resumes."""
    workdir = copy_run(reference, tmp_path)
    proc = wtal(env, *train_args(data_root, workdir, *RUN, '--config.train.num_steps=10',
                                 '--seeds', '1'))
    assert_ok(proc)
    assert f'resuming from step 8 in {workdir}' in proc.stderr
    assert saved_steps(workdir)[-1] == 10
    # Another seed is another run.
    proc = wtal(env, *train_args(data_root, workdir, *RUN, '--config.train.num_steps=12',
                                 '--seeds', '2'))
    assert_one_line_error(proc, 'train', 'seeds: [0] -> [0, 1]')


KILLED_BETWEEN_WRITES = '''
import os, signal, sys
from wtal_jax.runs import evaluate
write = evaluate.write_json_atomic


def killing(path, obj, **kwargs):   # SIGKILL where the metrics file would be written
    if os.path.basename(path).startswith('metrics_'):
        os.kill(os.getpid(), signal.SIGKILL)
    write(path, obj, **kwargs)


evaluate.write_json_atomic = killing
from wtal_jax import cli
sys.exit(cli.main(sys.argv[1:]))
'''


def test_an_evaluate_killed_between_its_two_writes_leaves_no_metrics_of_another_results_file(
        reference, env, tmp_path):
    """The metrics file names its results file's SHA-256 and is removed before that file is
    replaced: an evaluate of step 8 killed after writing its results leaves no metrics file
    (not step 4's, beside step 8's results); the next evaluate writes both, matching."""
    import hashlib
    workdir = copy_run(reference, tmp_path)
    results, metrics = (os.path.join(workdir, f'{kind}_test.json')
                        for kind in ('results', 'metrics'))
    assert_ok(wtal(env, 'evaluate', '--checkpoint', os.path.join(workdir, 'checkpoints', '4'),
                   '--quiet'))
    with open(metrics) as f:
        assert json.load(f)['step'] == 4
    with open(results, 'rb') as f:
        step_4 = f.read()
    proc = subprocess.run([sys.executable, '-c', KILLED_BETWEEN_WRITES, 'evaluate',
                           '--workdir', workdir, '--which', 'latest', '--quiet'],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not os.path.exists(metrics)
    with open(results, 'rb') as f:
        assert f.read() != step_4   # step 8's results, without metrics describing them
    assert_ok(wtal(env, 'evaluate', '--workdir', workdir, '--which', 'latest', '--quiet'))
    with open(metrics) as f, open(results, 'rb') as g:
        written = json.load(f)
        assert written['step'] == 8 and written['results_file'] == 'results_test.json'
        assert written['results_sha256'] == hashlib.sha256(g.read()).hexdigest()
