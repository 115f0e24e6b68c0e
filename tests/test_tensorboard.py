"""TensorBoard's view of a run: the event files, read back with TensorBoard's own reader
(``EventAccumulator``), hold every number of ``metrics.jsonl`` once, per seed and as the mean over
seeds, also after a run killed past its last checkpoint is resumed."""

import os
import subprocess
import sys

import numpy as np
import pytest

from wtal_jax.runs import tensorboard
from wtal_jax.runs.rundir import RunDir

from test_kill import command, committed, logged_steps, run_until
from test_loop import RUN, data_root, train  # noqa: F401 (a fixture)
from test_rundir import cli_env

event_accumulator = pytest.importorskip(
    'tensorboard.backend.event_processing.event_accumulator',
    reason="TensorBoard's reader comes with the [test] extra (tensorboard)")


def read_events(folder) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Run name ('' for the folder itself) -> tag -> [(step, value)] in file order, as
    TensorBoard reads them (purges included)."""
    found = {}
    for path, _, files in os.walk(folder):
        if any(f.startswith('events.out.tfevents') for f in files):
            acc = event_accumulator.EventAccumulator(path, size_guidance={'scalars': 0})
            acc.Reload()
            name = os.path.relpath(path, folder)
            found['' if name == '.' else name] = {
                tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()['scalars']}
    return found


def expected_events(rows, seeds) -> dict:
    """What the events must hold, computed from the metrics rows independently of the writer:
    float32 values (TensorBoard stores float32)."""
    out = {'': {}, **{f'seed_{s}': {} for s in seeds}}
    if len(seeds) > 1:
        out['mean'] = {}
    by_step = {}
    for row in rows:
        numbers = {}
        for key, value in row.items():
            if key in ('step', 'seed', 'split') or isinstance(value, (bool, list, str)):
                continue
            if isinstance(value, dict):
                # '0.1:0.7' -> '0.1-0.7': a tag holds letters, digits and _.-/
                numbers.update({f"{row['split']}/{key}/{k.replace(':', '-')}": v
                                for k, v in value.items()})
            else:
                numbers[f"{row['split']}/{key}"] = value
        for tag, value in numbers.items():
            shared = tag.endswith(('/steps_per_second', '/learning_rate'))
            if shared and row['seed'] != seeds[0]:
                continue
            run = '' if shared else f"seed_{row['seed']}"
            out[run].setdefault(tag, []).append((row['step'], float(np.float32(value))))
            if not shared:
                by_step.setdefault((row['step'], tag), []).append(value)
    if len(seeds) > 1:
        for (step, tag), values in sorted(by_step.items()):
            out['mean'].setdefault(tag, []).append((step, float(np.float32(np.mean(values)))))
    return {run: tags for run, tags in out.items() if tags}


def as_sets(events) -> dict:
    return {run: {tag: sorted(points) for tag, points in tags.items()}
            for run, tags in events.items()}


def test_a_trained_run_has_the_metrics_of_every_seed_and_their_mean(data_root, tmp_path):
    workdir = tmp_path / 'run'
    train(data_root, workdir, *RUN, '--config.train.num_steps=8', '--config.seeds=[0,1]')
    rows = RunDir(str(workdir)).read_metrics()
    events = read_events(workdir / tensorboard.EVENTS_DIR)
    assert as_sets(events) == as_sets(expected_events(rows, (0, 1)))
    # What the issue asks to see, by name.
    for tag in ('train/loss', 'train/loss_um', 'selection/average_mAP', 'test/average_mAP',
                'test/averages/0.1-0.7'):
        assert tag in events['seed_0'] and tag in events['seed_1'] and tag in events['mean']
    assert {'train/learning_rate', 'train/steps_per_second'} <= set(events[''])
    assert [v for _, v in events['']['train/learning_rate']] == pytest.approx([1e-3, 1e-3])
    # A hand-checked mean: the test split's average mAP at step 8 over the two seeds.
    tests = [r['average_mAP'] for r in rows if r['split'] == 'test' and r['step'] == 8]
    assert dict(events['mean']['test/average_mAP'])[8] == pytest.approx(
        (tests[0] + tests[1]) / 2, rel=1e-6)


def test_the_scalars_of_a_row():
    row = {'step': 3, 'split': 'test', 'seed': 1, 'average_mAP': 0.5, 'mAP': [0.4, 0.6],
           'averages': {'0.1:0.5': 0.7}, 'tiou_thresholds': [0.1, 0.2], 'flag': True, 'n': 4}
    assert tensorboard.scalars(row) == {'test/average_mAP': 0.5, 'test/averages/0.1-0.5': 0.7,
                                        'test/n': 4.0}


def test_a_killed_and_resumed_run_shows_each_point_once(data_root, tmp_path,
                                                        tmp_path_factory):
    env = cli_env(str(tmp_path_factory.getbasetemp() / 'jax-compilation-cache'))
    workdir = str(tmp_path / 'killed')
    # Rows every 4 steps (evaluations every 10: RUN of test_kill), checkpoints every 5: killed
    # once the rows of step 12 are written, past the checkpoint of step 10.
    run = command(data_root, workdir) + ['--seeds', '0,1', '--config.checkpoint.every_steps=5']
    proc = subprocess.Popen(run, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert run_until(proc, lambda: max(logged_steps(workdir), default=0) >= 12)
    proc.stderr.close()
    restored = max(committed(workdir))
    before = read_events(os.path.join(workdir, tensorboard.EVENTS_DIR))
    killed_steps = {s for points in before['seed_0'].values() for s, _ in points}
    assert max(killed_steps) > restored, (restored, killed_steps)   # else this checks nothing
    finished = subprocess.run(run, capture_output=True, text=True, env=env, timeout=600)
    assert finished.returncode == 0, finished.stderr
    assert f'resuming from step {restored}' in finished.stderr
    rows = RunDir(workdir).read_metrics()
    events = read_events(os.path.join(workdir, tensorboard.EVENTS_DIR))
    # Every tag's points in step order, each step once, equal to the rows: nothing of the
    # killed run's last rows (done again after the restored step) shows twice.
    assert events == expected_events(rows, (0, 1))
    for tags in events.values():
        for points in tags.values():
            steps = [s for s, _ in points]
            assert steps == sorted(set(steps))


def test_tensorboardx_is_imported_without_torch():
    code = ('import sys; from wtal_jax.runs import tensorboard; tensorboard.summary_writer_class()'
            '; print("torch" in sys.modules)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == 'False', out.stderr
