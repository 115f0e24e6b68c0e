"""The check of issue 11: training killed with SIGKILL at random moments — during checkpoint
saves, right after metrics appends, during start-up — and restarted with the same command each
time ends with the parameters of an uninterrupted run, bit for bit (CPU), the same checkpoints
kept, and the same metrics.jsonl rows (all but the wall-clock ``steps_per_second``).

The moments are drawn from a seeded generator, so the test is reproducible; each kill is aimed
at an event seen in the run folder (an orbax temporary folder, a new metrics row) and the test
checks that the kills did land there.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from wtal_jax.runs import checkpoints, rundir
from wtal_jax.runs.rundir import METRICS_FILE, REPORT_FILE, RunDir

from test_loop import TINY, data_root, without_timing  # noqa: F401 (a fixture)
from test_rundir import cli_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, 'configs', 'synthetic.py')
NUM_STEPS = 30
# A checkpoint every step (so that kills often land in a save), three kept plus the best; a
# log window of 4 steps (cut by every checkpoint); evaluations, and their rows, every 10.
RUN = ['--config.train.num_steps=30', '--config.checkpoint.every_steps=1',
       '--config.checkpoint.keep=3', '--config.train.log_every_steps=4',
       '--config.eval.every_steps=10']
SEED = 2026
# What each kill aims at; the step it aims at is drawn at random.
KILLS = ('save', 'metrics', 'start', 'save', 'metrics', 'save')
TMP = '.orbax-checkpoint-tmp'


def command(root, workdir):
    return [sys.executable, '-m', 'wtal_jax', 'train', '--config', CONFIG, '--workdir', workdir,
            '--quiet', *TINY, f'--config.data.root={root}', *RUN]


def _listing(workdir) -> list[os.DirEntry]:
    try:
        return list(os.scandir(os.path.join(workdir, checkpoints.CHECKPOINT_DIR)))
    except FileNotFoundError:
        return []


def committed(workdir) -> list[int]:
    """The steps orbax has committed (temporary folders left out)."""
    return sorted(int(e.name) for e in _listing(workdir) if e.name.isdigit())


def saving(workdir, since: int = 0) -> list[int]:
    """The steps being written: orbax's temporary folders (changed at ``since`` ns or later;
    those a killed run left behind are older)."""
    found = []
    for entry in _listing(workdir):
        step = entry.name.split('.')[0]
        if TMP in entry.name and step.isdigit():
            try:
                if entry.stat().st_mtime_ns >= since:
                    found.append(int(step))
            except FileNotFoundError:   # committed (renamed) meanwhile
                pass
    return found


def logged_steps(workdir, since: int = 0) -> list[int]:
    """The steps of the metrics rows, if the file changed at ``since`` ns or later."""
    path = os.path.join(workdir, METRICS_FILE)
    try:
        if os.stat(path).st_mtime_ns < since:
            return []
        with open(path) as f:
            lines = f.read().split('\n')[:-1]   # a torn last line, if any, left out
    except FileNotFoundError:
        return []
    return [json.loads(line)['step'] for line in lines]


def run_until(proc, seen, timeout=240) -> bool:
    """Polls until ``seen()`` (then kills ``proc`` with SIGKILL and returns True) or until the
    process ends by itself (False)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if seen():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        assert time.monotonic() < deadline, 'the run neither reached its target nor ended'
        time.sleep(0.002)
    return False


def test_training_killed_at_random_moments_ends_as_if_never_killed(data_root, tmp_path,
                                                                   tmp_path_factory):
    env = cli_env(str(tmp_path_factory.getbasetemp() / 'jax-compilation-cache'))
    reference = str(tmp_path / 'reference')
    proc = subprocess.run(command(data_root, reference), capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr

    workdir = str(tmp_path / 'killed')
    rng = random.Random(SEED)
    landed = []
    for aim in KILLS:
        done = max(committed(workdir), default=0)
        # A step soon after the last checkpoint, with a metrics row at or after it before the
        # last step (rows come every 4 steps and every 10).
        target = rng.randint(done + 1, min(done + 5, NUM_STEPS - 2))
        delay = rng.uniform(0.5, 4.0)
        began, since = time.monotonic(), time.time_ns()
        if aim == 'save':        # while this run writes the checkpoint of a step >= target,
            within = rng.uniform(0, 0.02)   # this long (s) after it began to
            first = []

            def seen():
                if not first and any(s >= target for s in saving(workdir, since)):
                    first.append(time.monotonic())
                return bool(first) and time.monotonic() - first[0] >= within
        elif aim == 'metrics':   # right after this run appends a row of a step >= target
            def seen():
                return any(s >= target for s in logged_steps(workdir, since))
        else:                    # during start-up: loading, restoring, compiling
            def seen():
                return time.monotonic() - began > delay
        proc = subprocess.Popen(command(data_root, workdir), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=env)
        killed = run_until(proc, seen)
        assert killed, f'the run ended before the kill aimed at {aim} {target}: ' \
                       f'{proc.stderr.read().decode()[-2000:]}'
        proc.stderr.close()
        # What the kill left behind: a save cut off, rows past the last committed step.
        landed.append((aim, bool(saving(workdir, since)),
                       max(logged_steps(workdir), default=0) > max(committed(workdir),
                                                                    default=0)))
    assert sum(aim == 'save' and cut for aim, cut, _ in landed) >= 2, landed
    assert sum(aim == 'metrics' and rows for aim, _, rows in landed) >= 1, landed

    proc = subprocess.run(command(data_root, workdir), capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert 'Traceback' not in proc.stderr
    assert committed(workdir) == committed(reference)
    assert not saving(workdir)
    for which in ('latest', 'best'):
        a = rundir.load_checkpoint(reference, which=which)
        b = rundir.load_checkpoint(workdir, which=which)
        assert a.step == b.step
        for x, y in zip(jax.tree.leaves(a.state), jax.tree.leaves(b.state)):
            assert np.array_equal(x, y)     # bitwise: parameters, Adam moments, step, rng
    rows = RunDir(workdir).read_metrics()
    assert without_timing(rows) == without_timing(RunDir(reference).read_metrics())
    with open(os.path.join(workdir, REPORT_FILE)) as f, \
            open(os.path.join(reference, REPORT_FILE)) as g:
        assert json.load(f) == json.load(g)
