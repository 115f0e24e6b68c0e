"""``wtal-jax bench`` from a fresh clone (the suite: test_bench_suite.py): runs without data, on
generated THUMOS'14-like videos; ``--data`` reads the real test split; bad sizes or folders are
one line and exit status 2.

Speed itself is not asserted here (speed claims live in BENCHMARKS.md); the figures are checked
for what they count and for agreeing with one another."""

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from wtal_jax import cli
from wtal_jax.data import dataset
from wtal_jax.errors import UserError
from wtal_jax.runs import loop
from wtal_jax.tools import bench

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small network sizes: the benchmark machinery, not the speed, is under test.
SMALL = ['--feature-dim', '16', '--embed-dim', '16', '--segments', '64', '--repeats', '1']
# The training loop's benchmarks at small sizes: 3 log windows of 2 steps, 2 of them timed.
LOOP = ['--feature-dim', '16', '--embed-dim', '16', '--segments', '16', '--batch-size', '4',
        '--classes', '5', '--train-videos', '6', '--test-videos', '4', '--steps', '6',
        '--log-every', '2']
SHAPE_KEYS = ('batch_size', 'segments', 'feature_dim', 'embed_dim', 'classes')


def run_bench(capsys, *args):
    capsys.readouterr()
    status = cli.main(['bench', *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_generated_videos_have_thumos14_like_lengths_and_ground_truth():
    videos = bench.generated_videos(20)
    assert len(videos.videos) == len(videos.lengths) == 210
    assert videos.lengths.min() >= 23 and videos.lengths.max() <= 2614
    assert 150 < np.median(videos.lengths) < 400  # THUMOS'14's test median is 252 segments
    gt = videos.gt
    assert gt.video_names == videos.videos and len(gt.class_names) == 20
    counts = np.bincount(gt.video, minlength=210)
    assert counts.min() >= 1  # every video has an action
    # Instances lie inside their videos (bounds jitter by under half a segment of 0.64 s).
    ends = videos.lengths[gt.video] * 0.64
    assert np.all(gt.segments[:, 0] >= 0) and np.all(gt.segments[:, 1] <= ends + 0.32)
    again = bench.generated_videos(20)
    np.testing.assert_array_equal(again.lengths, videos.lengths)
    np.testing.assert_array_equal(again.gt.segments, gt.segments)


def test_generated_lengths_follow_the_real_test_split(thumos14_dir):
    with open(os.path.join(thumos14_dir, 'durations.json')) as f:
        durations = json.load(f)
    with open(os.path.join(thumos14_dir, 'split_test.txt')) as f:
        real = np.log([int(durations[v.strip()]['duration'] * 25 / 16) for v in f if v.strip()])
    generated = np.log(bench.generated_videos(20).lengths)
    assert abs(generated.mean() - real.mean()) < 0.15
    assert abs(generated.std() - real.std()) < 0.15
    assert len(generated) == len(real)


def test_thumos14_videos_from_the_data_folder(thumos14_dir):
    videos = bench.thumos14_videos(thumos14_dir)
    with open(os.path.join(thumos14_dir, 'split_test.txt')) as f:
        names = [line.strip() for line in f if line.strip()]
    with open(os.path.join(thumos14_dir, 'durations.json')) as f:
        durations = json.load(f)
    assert list(videos.videos) == names and len(names) == 210
    # n = int(duration * 25 fps / 16 frames per segment), SPEC §1
    assert videos.lengths.tolist() == [int(durations[v]['duration'] * 25 / 16) for v in names]
    assert videos.gt.subset == 'test' and len(videos.gt.class_names) == 20


@pytest.mark.parametrize('which', ['localize', 'map'])
def test_localize_and_map_run_without_data(which, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a fresh clone has no ../shared beside it
    status, out, err = run_bench(capsys, which, *SMALL, '--json')
    assert status == 0, err
    figures = json.loads(out)
    assert figures['benchmark'] == 'localize+map' and figures['videos'] == 210
    assert 'generated' in figures['data']
    assert figures['detections'] > 210  # a random network still proposes in every video
    assert figures['total_seconds'] == pytest.approx(
        figures['localize_seconds'] + figures['map_seconds'])


def test_inference_runs_without_data(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, out, err = run_bench(capsys, 'inference', *SMALL)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == 'inference:'
    shown = dict(line.split(None, 1) for line in lines[1:])
    assert shown['videos'] == '210' and shown['compilations'] == '2'
    assert 0 < float(shown['packing_efficiency']) <= 1


def test_the_command_runs_with_no_arguments_from_any_folder(tmp_path):
    """As a new user types it, in a folder with nothing beside it."""
    proc = subprocess.run([sys.executable, '-m', 'wtal_jax', 'bench', 'map', *SMALL, '--json'],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env=dict(os.environ, JAX_PLATFORMS='cpu'))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)['videos'] == 210


@pytest.mark.parametrize('args,words', [
    (['map', '--data', 'no_such_folder'], ['no_such_folder/durations.json: not found',
                                           '--data takes the folder']),
    (['inference', '--segments', '0', '--repeats', '-1'], ['segments 0', 'repeats -1']),
    (['train-step', '--batch-size', '5', '--devices', '2'], ['batch size 5 does not divide 2']),
    (['train-step', '--batch-size', '4', '--devices', '4'], ['4 devices asked']),
    (['loop', '--steps', '15'], ['--steps 15 leaves no log window after the first',
                                 'at least 2 x --log-every = 20']),
    (['loop', '--eval-every', '-1'], ['--eval-every must be 0']),
    (['loop', '--feature-dim', '15', '--steps', '2', '--log-every', '1'],
     ['feature size 15 is odd']),
    (['seeds', '--num-seeds', '0'], ['seeds 0']),
    (['map', '--config.seed=1'], ['takes no config overrides']),
])
def test_bad_input_is_one_line_exit_2(args, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, out, err = run_bench(capsys, *args)
    assert status == 2 and not out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('wtal-jax bench: error: '), err
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_a_broken_data_folder_is_a_user_error(tmp_path):
    (tmp_path / 'durations.json').write_text('{"v1": {"duration": 10.0}}')
    (tmp_path / 'split_test.txt').write_text('v1\nv2\n')
    with pytest.raises(UserError, match='no duration for 1 of the 2 videos'):
        bench.thumos14_videos(str(tmp_path))
    (tmp_path / 'durations.json').write_text('{"v1": ')
    with pytest.raises(UserError, match='cannot read as JSON'):
        bench.thumos14_videos(str(tmp_path))
    with pytest.raises(UserError, match='unknown benchmark'):
        list(bench.run('everything'))


# ---------------------------------------------------------------------------------------------
# The training step, the training loop and many seeds


def test_train_step_runs_the_compiled_step_both_ways(capsys):
    status, out, err = run_bench(capsys, 'train-step', *SMALL, '--batch-size', '4', '--json')
    assert status == 0, err
    figures = json.loads(out)
    assert figures['dtype'] == 'float32' and figures['devices'] == 1
    assert [figures[k] for k in SHAPE_KEYS] == [4, 64, 16, 16, 20]
    assert figures['seconds_per_step'] > 0 and figures['host_seconds_per_step'] > 0
    # FLOPs of one step: 2 x 2BT3DE (conv forward, weight gradient) + 3 x 2BTEC (classifier).
    flops = 2 * 2 * 4 * 64 * 3 * 16 * 16 + 3 * 2 * 4 * 64 * 16 * 20
    assert figures['gflops_per_second'] == pytest.approx(
        flops / figures['seconds_per_step'] / 1e9)


def test_train_step_runs_on_a_mesh_of_local_devices(tmp_path):
    """--devices 2 on two forced CPU devices: each takes half of the batch's rows."""
    proc = subprocess.run(
        [sys.executable, '-m', 'wtal_jax', 'bench', 'train-step', *SMALL, '--batch-size', '4',
         '--devices', '2', '--json'], capture_output=True, text=True, cwd=tmp_path, timeout=600,
        env=dict(os.environ, JAX_PLATFORMS='cpu',
                 XLA_FLAGS='--xla_force_host_platform_device_count=2'))
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)
    assert figures['devices'] == 2 and figures['seconds_per_step'] > 0


def test_loop_rate_is_steps_over_seconds_of_the_windows_after_the_first():
    rows = [{'step': 5, 'split': 'train', 'seed': 3, 'steps_per_second': 0.1},  # compilation
            {'step': 5, 'split': 'train', 'seed': 4, 'steps_per_second': 0.1},
            {'step': 10, 'split': 'train', 'seed': 3, 'steps_per_second': 2.0},
            {'step': 10, 'split': 'train', 'seed': 4, 'steps_per_second': 2.0},
            {'step': 10, 'split': 'test', 'seed': 3, 'average_mAP': 0.5},
            {'step': 12, 'split': 'train', 'seed': 3, 'steps_per_second': 0.5}]
    rate, steps, seconds = bench.loop_rate(rows)
    # Steps 6-10 at 2 steps/s (2.5 s), 11-12 at 0.5 steps/s (4 s).
    assert (steps, seconds) == (7, 6.5)
    assert rate == pytest.approx(7 / 6.5)


def test_the_data_set_is_read_by_the_loader_with_the_lengths_asked(tmp_path):
    train_lengths, test_lengths = bench.loop_lengths(5, 7)
    assert train_lengths.min() >= 200 and train_lengths.max() <= 2000
    np.testing.assert_array_equal(test_lengths, bench.generated_lengths(7))
    data = bench.write_dataset(str(tmp_path), train_lengths, test_lengths, feature_dim=6,
                               classes=3)
    for split, lengths in (('train', train_lengths), ('test', test_lengths)):
        loaded = dataset.load_split(
            str(tmp_path), annotation_file='gt.json', split_file=f'split_{split}.txt',
            feature_dir=f'features/{split}', subset=split, modality='all',
            class_names=('Class00', 'Class01', 'Class02'), feature_dim=6,
            require_labels=split == 'train')
        assert [f.shape for f in loaded.features] == [(n, 6) for n in lengths]
        assert all(f.min() >= 0 and f.max() < 1 for f in loaded.features)
        assert data.feature_bytes(split) == sum(lengths) * 6 * 4
    assert loaded.labels.sum(axis=1).min() >= 1   # every video has an action


@pytest.fixture(scope='module')
def loop_figures(tmp_path_factory):
    """bench loop at small sizes, through the command line, counting the calls of the real
    training loop (the spy calls it through)."""
    calls = []
    real = loop.train_and_evaluate

    def spy(cfg, workdir, **kw):
        calls.append((cfg.train.num_steps, cfg.eval.every_steps, cfg.data.root))
        return real(cfg, workdir, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, 'train_and_evaluate', spy)
        mp.chdir(tmp_path_factory.mktemp('fresh'))
        with contextlib.redirect_stdout(io.StringIO()) as out:
            status = cli.main(['bench', 'loop', *LOOP, '--json'])
    assert status == 0
    return json.loads(out.getvalue()), calls


def test_loop_runs_the_real_training_loop_and_the_step_alone(loop_figures):
    figures, calls = loop_figures
    assert len(calls) == 1 and calls[0][:2] == (6, 6)   # one run, evaluated after step 6 only
    assert not os.path.exists(calls[0][2])              # its temporary data set is gone
    assert [figures[k] for k in SHAPE_KEYS] == [4, 16, 16, 16, 5]
    assert (figures['steps'], figures['log_every_steps'], figures['timed_steps'],
            figures['evaluations'], figures['eval_every_steps']) == (6, 2, 4, 1, 0)
    assert figures['loop_steps_per_second'] > 0 and figures['step_steps_per_second'] > 0
    assert figures['loop_to_step_ratio'] == pytest.approx(
        figures['loop_steps_per_second'] / figures['step_steps_per_second'])
    assert figures['data_on_device'] is True and figures['loop_wall_seconds'] > 0
    assert figures['train_videos'] == 6 and figures['test_videos'] == 4
    assert 6 * 200 <= figures['train_segments'] <= 6 * 2000
    assert figures['train_feature_bytes'] == figures['train_segments'] * 16 * 4
    assert figures['host_target_bytes'] == 2 * figures['train_feature_bytes'] + 2 ** 30
    assert 0 < figures['peak_host_delta_bytes'] < figures['peak_host_bytes']
    assert figures['peak_device_bytes'] is None   # a CPU reports no memory statistics


def test_seeds_compares_n_seeds_at_once_with_n_runs(capsys):
    status, out, err = run_bench(capsys, 'seeds', *LOOP[:10], '--steps', '2', '--num-seeds', '3')
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == 'seeds:'
    shown = dict(line.split(None, 1) for line in lines[1:])
    assert (shown['seeds'], shown['steps'], shown['method']) == ('3', '2', 'compiled step')
    together, separate = float(shown['together_seconds']), float(shown['separate_seconds'])
    assert together > 0 and separate > 0
    # Printed to 4 significant digits.
    assert float(shown['separate_to_together']) == pytest.approx(separate / together, rel=1e-3)
    assert float(shown['together_to_one_seed']) == pytest.approx(together / (separate / 3),
                                                                 rel=1e-3)
