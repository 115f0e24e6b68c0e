"""Figures of a tiny trained run: expected axes, non-blank pixels, and the ``plot`` command."""

import os
import sys

import numpy as np
import pytest

pytest.importorskip('matplotlib', reason='figures need the [viz] extra (matplotlib)')

from wtal_jax import cli, config
from wtal_jax.data import dataset
from wtal_jax.runs import loop
from wtal_jax.tools import plotting  # noqa: E402
from wtal_jax.errors import UserError  # noqa: E402
from wtal_jax.method.um.scores import from_output  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      'configs', 'synthetic.py')
# A few seconds of training on a data set of 24 short videos.
TINY = ('synthetic.num_train=16', 'synthetic.num_test=8', 'synthetic.feature_dim=8',
        'synthetic.min_segments=20', 'synthetic.max_segments=40', 'data.feature_dim=16',
        'data.num_segments=16', 'model.embed_dim=16', 'train.batch_size=4',
        'train.num_steps=6', 'eval.every_steps=3', 'checkpoint.every_steps=3',
        'train.log_every_steps=2', 'eval.chunk_segments=256')


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp('plotting')
    cfg = config.load_config(CONFIG, [*TINY, f'data.root={root / "data"}'])
    workdir = str(root / 'run')
    loop.train_and_evaluate(cfg, workdir, progress=False)
    return workdir


@pytest.fixture(scope='module')
def run(tiny_run):
    return plotting.load_run(tiny_run)


def _pixels(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(np.float64)


def assert_not_blank(pixels: np.ndarray) -> None:
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1
    assert pixels.std() > 5.0  # grey levels of 0..255: a drawing, not a flat image


def test_action_mask_marks_segments_inside_instances():
    gt = dataset.GroundTruth(segments=np.array([[1.0, 2.0], [5.5, 9.0]]), classes=np.array([0, 1]))
    # 10 segments of 1 s, not subsampled: centres 0.5, 1.5, ..., 9.5.
    mask = plotting.action_mask(gt, 10, 10, 1.0)
    np.testing.assert_array_equal(np.flatnonzero(mask), [1, 5, 6, 7, 8])  # 5.5 is inside
    # 20 segments of 0.5 s sampled to 10: original segments 0, 2, ..., 18.
    mask = plotting.action_mask(gt, 20, 10, 0.5)
    # (original segment + 0.5) * 0.5 s: centres 0.25, 1.25, 2.25, ...
    np.testing.assert_array_equal(np.flatnonzero(mask), [1, 6, 7, 8])


def test_magnitude_figure_has_before_and_after_histograms(run):
    fig = plotting.magnitude_figure(run)
    axes = fig.get_axes()
    assert len(axes) == 2
    assert axes[0].get_title().startswith('before training')
    assert axes[1].get_title() == f'after training (step {run.step})'
    for ax in axes:
        assert ax.get_xlabel() == 'feature magnitude ||f_t||'
        assert ax.get_ylabel() == 'density'
        assert len(ax.patches) > 10  # the bars of two histograms
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels[0].startswith('action') and labels[1].startswith('background')
    assert_not_blank(_pixels(fig))


def test_segment_magnitudes_split_every_segment(run):
    action, background = plotting.segment_magnitudes(run)
    total = sum(len(from_output(o).magnitudes) for o in run.outputs())
    assert action.size + background.size == total
    assert action.size > 0 and background.size > 0


def test_timeline_figure_stacks_scores_magnitude_detections_and_gt(run):
    fig = plotting.timeline_figure(run)
    axes = fig.get_axes()
    assert len(axes) == 4
    video = run.split.names[run.video_index()]
    assert axes[0].get_title().startswith(video)
    assert [ax.get_ylabel() for ax in axes] == ['score', 'magnitude u', 'detection score',
                                                'ground truth']
    assert axes[3].get_xlabel() == 'time (s)'
    assert len(axes[0].get_lines()) == 2  # fused score and segment softmax
    assert len(axes[1].get_lines()) == 1
    assert axes[2].collections or axes[2].texts  # detections, or "no detections"
    assert axes[3].collections  # ground-truth bars
    assert_not_blank(_pixels(fig))


def _plus_one_iou(a: np.ndarray, b: np.ndarray) -> float:
    """The release's IoU of two [start, end] segments in seconds: lengths end - start + 1."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]) + 1)
    return inter / ((a[1] - a[0] + 1) + (b[1] - b[0] + 1) - inter)


def _detected_pair(run):
    """The video whose evaluated results detect the most classes, and the first of them."""
    results = run.evaluate()[1]['results']
    video = max(run.split.names, key=lambda v: len({d['label'] for d in results[v]}))
    assert results[video], 'the tiny run detects nothing'
    return video, results[video][0]['label']


def test_timeline_shows_what_evaluate_writes_for_the_video_and_class(run):
    video, _ = _detected_pair(run)
    results = run.evaluate()[1]['results'][video]
    labels = sorted({d['label'] for d in results})
    assert len(labels) >= 2, 'the tiny run (deterministic on the CPU) detects two classes here'
    for class_name in labels:
        t = plotting.video_timeline(run, video, class_name)
        assert (t.video, t.class_name) == (video, class_name)
        written = [d for d in results if d['label'] == class_name]
        assert sorted(map(tuple, t.detections.tolist())) == sorted(
            (*d['segment'], d['score']) for d in written)
        # Detections are the proposals that greedy NMS keeps: each one is a proposal, and every
        # other proposal overlaps a kept one of at least its score by the NMS threshold.
        proposals = [tuple(p) for p in t.proposals.tolist()]
        kept = [tuple(d) for d in t.detections.tolist()]
        assert set(kept) <= set(proposals) and len(proposals) > len(kept)
        for p in set(proposals) - set(kept):
            assert any(d[2] >= p[2] and _plus_one_iou(d, p) >= run.localize_config.nms_iou
                       for d in kept), p


def test_timeline_time_axis_and_ground_truth(run):
    video, class_name = _detected_pair(run)
    t = plotting.video_timeline(run, video, class_name)
    v = run.split.names.index(video)
    # Positions are centres of equal steps that cover the whole video: n segments of 0.64 s.
    seconds = run.split.num_segments[v] * config.segment_seconds(run.cfg)
    step = np.diff(t.times)
    np.testing.assert_allclose(step, step[0], rtol=1e-9)
    np.testing.assert_allclose([t.times[0] - step[0] / 2, t.times[-1] + step[0] / 2],
                               [0.0, seconds], rtol=1e-9, atol=1e-9)
    assert t.times.shape == t.fused.shape == t.softmax.shape == t.magnitude.shape
    gt = run.split.gt[v]
    c = run.names.index(class_name)
    np.testing.assert_array_equal(t.gt, gt.segments[gt.classes == c])
    np.testing.assert_array_equal(t.gt_other, gt.segments[gt.classes != c])
    assert len(t.gt) + len(t.gt_other) == len(gt.classes)


def test_timeline_refuses_unknown_names(run):
    with pytest.raises(UserError, match='not in the test split'):
        plotting.video_timeline(run, 'no_such_video')
    with pytest.raises(UserError, match='is not one of'):
        plotting.video_timeline(run, class_name='NoSuchClass')


def test_curves_figure_shows_losses_and_map(tiny_run):
    fig = plotting.curves_figure(tiny_run)
    axes = fig.get_axes()
    assert len(axes) == 4
    assert [ax.get_title() for ax in axes] == [
        'L_cls (classification)', 'L_um (uncertainty modelling)', 'L_be (background entropy)',
        'detection mAP on test']
    for ax in axes[:3]:
        assert len(ax.get_lines()) == 1 and len(ax.get_lines()[0].get_xdata()) == 3
    # one line per tIoU threshold, the average, and the average on the selection split
    assert len(axes[3].get_lines()) == 7 + 2
    assert axes[3].get_ylabel() == 'mAP (%)'
    assert_not_blank(_pixels(fig))


def test_curves_figure_without_metrics_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match='no metrics.jsonl'):
        plotting.curves_figure(str(tmp_path))


def test_plot_command_writes_the_pngs(tiny_run, tmp_path, capsys):
    import matplotlib.image
    out = tmp_path / 'figures'
    assert cli.main(['plot', '--workdir', tiny_run, '--out', str(out), '--quiet']) == 0
    files = sorted(os.listdir(out))
    assert files[0] == 'curves.png' and files[1] == 'magnitudes.png'
    assert len(files) == 3 and files[2].startswith('timeline_video_test_')
    for name in files:
        assert_not_blank(255 * matplotlib.image.imread(str(out / name))[..., :3])
    assert capsys.readouterr().out.count('wrote ') == 3


def test_missing_matplotlib_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, 'matplotlib', None)  # import matplotlib raises ImportError
    with pytest.raises(UserError, match=r'pip install -e \.\[viz\]'):
        plotting.new_figure()


def test_plot_with_an_unknown_video_leaves_the_figures_there(tiny_run, tmp_path, capsys):
    out = tmp_path / 'figures'
    assert cli.main(['plot', '--workdir', tiny_run, '--out', str(out), '--quiet']) == 0
    before = {name: (os.stat(out / name).st_ino, (out / name).read_bytes())
              for name in os.listdir(out)}
    capsys.readouterr()
    for bad in (['--video', 'no_such_video'], ['--class', 'NoSuchClass']):
        assert cli.main(['plot', '--workdir', tiny_run, '--out', str(out), '--quiet',
                         *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith('wtal-jax plot: error: ') and '\n' not in err, err
        # The same files, not rewritten (the atomic writer would give each a new inode).
        assert {name: (os.stat(out / name).st_ino, (out / name).read_bytes())
                for name in os.listdir(out)} == before


# Run in a child: writes past 2,000 bytes fail with EFBIG (SIGXFSZ ignored, so no kill).
_LIMITED = ('import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); '
            'resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000)); ')


def test_save_png_cut_off_midway_keeps_the_previous_file(tmp_path):
    """The kernel refuses the PNG after 2,000 bytes: a plain ``savefig(path)`` would leave a
    truncated file; the atomic writer keeps the previous one and no temporary file."""
    import subprocess
    path = tmp_path / 'a.png'
    path.write_bytes(b'previous')
    code = ('import sys; from wtal_jax.tools import plotting; fig, axes = plotting.new_figure(); '
            'axes[0, 0].plot(range(100), [i * i for i in range(100)]); '
            'plotting.save_png(fig, sys.argv[1])')
    proc = subprocess.run([sys.executable, '-c', _LIMITED + code, str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and 'File too large' in proc.stderr, proc.stderr
    assert path.read_bytes() == b'previous'
    assert os.listdir(tmp_path) == ['a.png']
    proc = subprocess.run([sys.executable, '-c', code, str(path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and path.stat().st_size > 2000
