"""``wtal-jax bench`` from a fresh clone: runs without data, on generated THUMOS'14-like videos;
``--data`` reads the real test split; bad sizes or folders are one line and exit status 2.

Speed itself is not asserted here (speed claims live in BENCHMARKS.md); the figures are checked
for what they count."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from wtal_jax import cli
from wtal_jax.errors import UserError
from wtal_jax.tools import bench

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small network sizes: the benchmark machinery, not the speed, is under test.
SMALL = ['--feature-dim', '16', '--embed-dim', '16', '--segments', '64', '--repeats', '1']


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
