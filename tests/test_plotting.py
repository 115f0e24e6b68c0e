"""Figures of a tiny trained run: expected axes, non-blank pixels, and the ``plot`` command."""

import dataclasses
import json
import os
import re
import shutil
import sys

import numpy as np
import pytest

pytest.importorskip('matplotlib', reason='figures need the [viz] extra (matplotlib)')

from wtal_jax import cli, config
from wtal_jax.data import dataset
from wtal_jax.runs import loop
from wtal_jax.tools import plotting  # noqa: E402
from wtal_jax.tools.plots import compare as compare_plots, timeline as timeline_plots
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
    assert [ax.get_ylabel() for ax in axes] == ['score', 'sequence', 'detection score',
                                                'ground truth']
    assert axes[3].get_xlabel() == 'time (s)'
    # fused score and segment softmax (each with its dotted extrapolated tail)
    assert _line_labels(axes[0]) == ['segment score', 'segment softmax (unfused)']
    assert _line_labels(axes[1]) == ['normalised magnitude u']  # UM's magnitude family, by its name
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
    assert t.times.shape == t.score.shape == t.softmax.shape == t.sequences[0].values.shape
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
    assert len(axes) == 5
    # UM's losses (SPEC §4): the total first, then the terms as the rows hold them
    assert [ax.get_title() for ax in axes] == [
        'loss', 'loss_be', 'loss_cls', 'loss_um', 'detection mAP on test']
    for ax in axes[:4]:  # the curve and the selected step's mark
        assert len(ax.get_lines()) == 2 and len(ax.get_lines()[0].get_xdata()) == 3
    # one line per tIoU threshold, the average, the average on the selection split, the mark
    assert len(axes[4].get_lines()) == 7 + 2 + 1
    assert axes[4].get_ylabel() == 'mAP (%)'
    assert_not_blank(_pixels(fig))


def test_curves_figure_without_metrics_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match='no metrics.jsonl'):
        plotting.curves_figure(str(tmp_path))


def test_plot_command_writes_the_pngs(tiny_run, tmp_path, capsys):
    import matplotlib.image
    out = tmp_path / 'figures'
    assert cli.main(['plot', '--workdir', tiny_run, '--out', str(out), '--quiet']) == 0
    files = sorted(os.listdir(out))
    assert files[0] == 'curves_seed0.png' and files[1] == 'magnitudes_seed0.png'
    assert len(files) == 3 and files[2].startswith('timeline_video_test_')
    assert files[2].endswith('_seed0.png')
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


# ---------------------------------------------------------------------------------------------
# Figures of any method (UM and BaS-Net), the comparison (paper Fig. 4), seeds, titles


def _line_labels(ax) -> list[str]:
    """Labels of an axes' labelled lines (matplotlib names unlabelled ones '_child...')."""
    return [line.get_label() for line in ax.get_lines() if not line.get_label().startswith('_')]


# BaS-Net (SPEC §8) on tiny_run's data, two seeds; theta_vid lowered so that six steps of
# training localise classes (its p over C + 1 outputs starts near 1 / 6 < 0.25).
BASNET = ('method=basnet', *TINY, 'model.filter_dim=16', 'localize.theta_vid=0.1', 'seeds=[0,1]')


@pytest.fixture(scope='module')
def basnet_run(tiny_run):
    """A tiny BaS-Net run of two seeds, trained with the command line."""
    root = os.path.dirname(tiny_run)
    workdir = os.path.join(root, 'basnet')
    args = ['train', '--config', CONFIG, '--workdir', workdir, '--quiet',
            *(f'--config.{o}' for o in (*BASNET, f'data.root={os.path.join(root, "data")}'))]
    assert cli.main(args) == 0
    return workdir


@pytest.fixture(scope='module')
def bas(basnet_run):
    return plotting.load_run(basnet_run, seed=0)


def _rows(workdir: str, seed: int, split: str) -> list[dict]:
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
        rows = [json.loads(line) for line in f]
    return [r for r in rows if r['seed'] == seed and r['split'] == split]


def _vertical_lines(ax) -> list[float]:
    """x of every vertical line of an axes (axvline: two equal x values)."""
    return [float(line.get_xdata()[0]) for line in ax.get_lines()
            if len(line.get_xdata()) == 2 and line.get_xdata()[0] == line.get_xdata()[1]]


def test_loss_keys_are_the_rows_keys_but_the_loops_total_first():
    rows = [{'step': 2, 'split': 'train', 'seed': 0, 'loss_b': 1.0, 'loss': 2.0,
             'steps_per_second': 3.0},
            {'step': 4, 'split': 'train', 'seed': 0, 'loss_b': 1.0, 'loss': 2.0, 'extra': 0.5}]
    assert plotting.loss_keys(rows) == ['loss', 'loss_b', 'extra']
    assert plotting.loss_keys([]) == []


def test_shown_detections_keep_those_near_the_best_in_ascending_order():
    det = np.array([[0, 1, 0.2], [2, 3, 0.8], [4, 5, 0.4], [6, 7, 0.39]])
    # 0.5 of the best (0.8) is 0.4: 0.4 and 0.8 stay, 0.39 and 0.2 go
    np.testing.assert_array_equal(compare_plots.shown_detections(det, 0.5),
                                  [[4, 5, 0.4], [2, 3, 0.8]])
    assert len(compare_plots.shown_detections(det, 0.0)) == 4
    assert compare_plots.shown_detections(np.zeros((0, 3)), 0.5).shape == (0, 3)


def test_measured_positions_count_the_points_up_to_the_last_segment():
    # np.arange(0, 3, 1 / 4): 0, 0.25, ..., 2.75; the nine up to 2 interpolate
    assert timeline_plots.measured_positions(3, 4) == 9
    assert timeline_plots.measured_positions(1, 24) == 1  # one segment: all held constant
    assert timeline_plots.measured_positions(2, 49) == 50  # 1 / 49 rounds: 0 .. 49 / 49


def test_timeline_marks_the_extrapolated_tail_and_keeps_localisations_values(run):
    """The release's upsampling extrapolates the last segment's slope (localisation keeps it);
    the figure draws that tail dotted, clipped to the interpolated range, on a hatched band."""
    factor = run.localize_config.upsample
    found = None
    for video, vs in zip(run.split.names, run.scores()):
        for c, class_name in enumerate(run.names):
            t = plotting.video_timeline(run, video, class_name)
            body = t.score[:t.measured]
            if t.score[t.measured:].min() < body.min() or t.score[t.measured:].max() > body.max():
                found = t, vs.scores[:, c]
                break
        if found:
            break
    assert found, 'no tail of the tiny run leaves its interpolated range'
    t, seg = found  # the T' sampled scores the method gives localisation
    length = seg.size
    assert t.measured == (length - 1) * factor + 1
    np.testing.assert_allclose(t.score[:t.measured],
                               np.interp(np.arange(t.measured) / factor, np.arange(length), seg),
                               rtol=1e-9, atol=1e-12)
    # The tail as the release computes it: the last interval's slope carried on.
    points = np.arange(t.measured, t.score.size) / factor
    tail = seg[-2] + (seg[-1] - seg[-2]) * (points - (length - 2))
    np.testing.assert_allclose(t.score[t.measured:], tail, rtol=1e-9, atol=1e-12)
    ax = plotting.plot_timeline(t).get_axes()[0]
    solid, dotted = [line for line in ax.get_lines()
                     if line.get_color() == ax.get_lines()[0].get_color()][:2]
    np.testing.assert_array_equal(solid.get_xdata(), t.times[:t.measured])
    np.testing.assert_array_equal(solid.get_ydata(), t.score[:t.measured])
    assert dotted.get_linestyle() == ':'
    np.testing.assert_array_equal(dotted.get_xdata(), t.times[t.measured - 1:])
    body = t.score[:t.measured]
    np.testing.assert_array_equal(dotted.get_ydata(),
                                  np.clip(t.score[t.measured - 1:], body.min(), body.max()))
    assert 'extrapolated tail (clipped)' in [x.get_text() for x in ax.get_legend().get_texts()]
    band = [p for p in ax.patches if p.get_hatch()]
    assert len(band) == 1
    # in data coordinates (a Rectangle from matplotlib 3.9, a Polygon before)
    x = band[0].get_patch_transform().transform(band[0].get_path().vertices)[:, 0]
    np.testing.assert_allclose([x.min(), x.max()], [t.times[t.measured - 1], t.end])


def test_basnet_timeline_draws_its_normalised_suppressed_cas(bas):
    video, class_name = _detected_pair(bas)
    t = plotting.video_timeline(bas, video, class_name)
    assert t.softmax is None and t.sequences == ()  # one family, on the score itself
    assert t.score_thresholds == tuple(bas.cfg.localize.score_thresholds)
    # SPEC §8.6: the suppression branch's CAS of the class, min-max normalised per class
    # (max and min through relu, not clipped), interpolated at factor points per segment.
    out = bas.outputs()[bas.split.names.index(video)]
    cas = np.asarray(out.outputs['cas_supp'], np.float64)[:out.length, bas.names.index(class_name)]
    high, low = max(cas.max(), 0.0), max(cas.min(), 0.0)
    norm = (cas - low) / (high - low if high > low else 1.0)
    factor = bas.localize_config.upsample
    np.testing.assert_allclose(t.score[:t.measured],
                               np.interp(np.arange(t.measured) / factor,
                                         np.arange(out.length), norm), rtol=1e-5, atol=1e-6)
    fig = plotting.plot_timeline(t)
    axes = fig.get_axes()
    assert [ax.get_ylabel() for ax in axes] == ['score', 'detection score', 'ground truth']
    assert _line_labels(axes[0]) == ['segment score']
    assert fig.get_suptitle() == f'basnet (basnet), seed 0, step {bas.step}'
    assert_not_blank(_pixels(fig))


def test_basnet_timeline_shows_what_evaluate_writes(bas):
    video, _ = _detected_pair(bas)
    results = bas.evaluate()[1]['results'][video]
    for class_name in sorted({d['label'] for d in results}):
        t = plotting.video_timeline(bas, video, class_name)
        assert t.selected
        assert sorted(map(tuple, t.detections.tolist())) == sorted(
            (*d['segment'], d['score']) for d in results if d['label'] == class_name)
        assert set(map(tuple, t.detections.tolist())) <= set(map(tuple, t.proposals.tolist()))


def test_magnitudes_only_for_methods_whose_outputs_hold_them(bas, run, tmp_path):
    assert run.has_output('magnitudes') and not bas.has_output('magnitudes')
    with pytest.raises(UserError, match='basnet gives no feature magnitudes'):
        plotting.segment_magnitudes(bas)
    notes = []
    written = plotting.write_figures(bas, str(tmp_path), note=notes.append)
    assert sorted(os.path.basename(p) for p in written) == sorted(os.listdir(tmp_path))
    assert sorted(os.listdir(tmp_path))[0] == 'curves_seed0.png'
    assert not any(name.startswith('magnitudes') for name in os.listdir(tmp_path))
    assert len(notes) == 1 and 'no feature magnitudes' in notes[0] and '\n' not in notes[0]


def test_basnet_curves_draw_its_own_losses(basnet_run):
    fig = plotting.curves_figure(basnet_run, seed=1)
    axes = fig.get_axes()
    # BaS-Net's losses (SPEC §8.4): the total, the two branch BCEs and the L1 norm
    assert [ax.get_title() for ax in axes] == ['loss', 'loss_base', 'loss_norm', 'loss_supp',
                                               'detection mAP on test']
    train = _rows(basnet_run, 1, 'train')
    for ax in axes[:4]:
        curve = ax.get_lines()[0]
        np.testing.assert_array_equal(curve.get_xdata(), [r['step'] for r in train])
        np.testing.assert_array_equal(curve.get_ydata(), [r[ax.get_title()] for r in train])
    assert fig.get_suptitle() == 'training curves: basnet, seed 1'
    assert_not_blank(_pixels(fig))


def test_curves_mark_the_step_the_report_selected(basnet_run):
    with open(os.path.join(basnet_run, 'report.json')) as f:
        report = json.load(f)
    for entry in report['per_seed']:
        step = entry['selected']['step']
        axes = plotting.curves_figure(basnet_run, seed=entry['seed']).get_axes()
        for ax in axes:
            assert _vertical_lines(ax) == [step], ax.get_title()
        assert f'selected step {step}' in [t.get_text() for t in axes[-1].get_legend().get_texts()]


def test_selected_step_without_a_report_is_the_rules(basnet_run, tmp_path):
    copy = str(tmp_path / 'copy')
    shutil.copytree(basnet_run, copy, ignore=shutil.ignore_patterns('report.json', 'plots'))
    for seed in (0, 1):
        # checkpoint.select = 'selection': the first step of the best selection-split average
        selection = _rows(basnet_run, seed, 'selection')
        best = max(r['average_mAP'] for r in selection)
        expected = next(r['step'] for r in selection if r['average_mAP'] == best)
        assert plotting.selected_step(copy, seed) == expected
    # A report, where there is one, is what the run chose.
    with open(os.path.join(copy, 'report.json'), 'w') as f:
        json.dump({'per_seed': [{'seed': 1, 'selected': {'step': 999}}]}, f)
    assert plotting.selected_step(copy, 1) == 999


def test_plot_names_files_by_seed(basnet_run, tmp_path, capsys):
    out = tmp_path / 'figures'
    args = ['plot', '--workdir', basnet_run, '--out', str(out), '--quiet']
    assert cli.main([*args, '--seed', '0']) == 0
    first = {name: os.stat(out / name).st_ino for name in os.listdir(out)}
    captured = capsys.readouterr()
    assert captured.out.count('wrote ') == 2
    notes = captured.err.strip().splitlines()
    assert len(notes) == 1 and notes[0].startswith('note: basnet: method basnet gives no feature')
    assert cli.main([*args, '--seed', '1']) == 0
    files = sorted(os.listdir(out))
    assert files[:2] == ['curves_seed0.png', 'curves_seed1.png']
    assert len(files) == 4 and files[2].endswith('_seed0.png') and files[3].endswith('_seed1.png')
    assert files[2].replace('_seed0', '') == files[3].replace('_seed1', '')  # same video, class
    assert {name: os.stat(out / name).st_ino for name in first} == first  # seed 0's untouched


def test_no_title_holds_an_absolute_path_and_each_names_run_and_seed(run, bas, tiny_run,
                                                                       basnet_run):
    root = os.path.dirname(tiny_run)
    figures = [(plotting.magnitude_figure(run), 'run (um), seed 0, step '),
               (plotting.timeline_figure(run), 'run (um), seed 0, step '),
               (plotting.curves_figure(tiny_run), 'run, seed 0'),
               (plotting.curves_figure(basnet_run, seed=1), 'basnet, seed 1'),
               (plotting.timeline_figure(bas), 'basnet (basnet), seed 0, step ')]
    for fig, named in figures:
        assert named in fig.get_suptitle(), fig.get_suptitle()
        for text in plotting.figure_texts(fig):
            assert root not in text and not re.search(r'(^|[\s(:])/\w', text), text
    texts = plotting.figure_texts(plotting.compare_figure(plotting.compare_timelines([bas, run])))
    assert texts and not any(root in text for text in texts)


def test_compare_command_writes_fig4_of_basnet_and_um(basnet_run, tiny_run, bas, run, tmp_path,
                                                       capsys):
    import matplotlib.image
    video, class_name = _detected_pair(bas)
    out = tmp_path / 'figures'
    assert cli.main(['plot', '--compare', basnet_run, tiny_run, '--seed', '0', '--video', video,
                     '--class', class_name, '--out', str(out), '--quiet']) == 0
    name = f'compare_{video}_{class_name}_seed0.png'
    assert os.listdir(out) == [name]
    assert capsys.readouterr().out == f'wrote {out / name}\n'
    data = (out / name).read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and 20_000 < len(data) < 2_000_000
    pixels = matplotlib.image.imread(str(out / name))
    assert 300 <= pixels.shape[0] <= pixels.shape[1] <= 2000  # wider than high
    assert_not_blank(255 * pixels[..., :3])


def test_compare_figure_rows_name_each_method_on_one_time_axis(bas, run):
    video, class_name = _detected_pair(bas)
    lines = plotting.compare_timelines([bas, run], video, class_name)
    fig = plotting.compare_figure(lines)
    axes = fig.get_axes()
    assert len(axes) == 2 * 2 + 1  # per run its scores and its detections; the ground truth
    assert [ax.get_ylabel() for ax in axes] == [
        'basnet\nscore', 'basnet\ndetections', 'um\nscore', 'um\ndetections', 'ground truth']
    assert axes[0].get_title(loc='left').startswith('basnet: run basnet, seed 0, step ')
    assert axes[2].get_title(loc='left').startswith('um: run run, seed 0, step ')
    assert fig.get_suptitle() == f'{video}: {class_name}'
    end = run.split.num_segments[run.split.names.index(video)] * config.segment_seconds(run.cfg)
    for ax in axes:
        np.testing.assert_allclose(ax.get_xlim(), (0.0, end))
    assert axes[-1].get_xlabel() == 'time (s)'
    for t, ax, bars in ((lines[0], axes[0], axes[1]), (lines[1], axes[2], axes[3])):
        np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), t.score[:t.measured])
        # one bar per detection scoring at least half the run's best
        best = t.detections[:, 2].max() if len(t.detections) else 0.0
        assert len(bars.collections) == int(np.sum(t.detections[:, 2] >= 0.5 * best))
    assert len(lines[0].detections)  # the pair was chosen for BaS-Net's detections
    # ground truth: one bar per instance of the class (and of the others)
    gt = run.split.gt[run.split.names.index(video)]
    bars = [c for c in axes[-1].collections]
    assert sum(len(c.get_paths()) for c in bars) == len(gt.classes)
    assert_not_blank(_pixels(fig))


def test_compare_of_three_runs_tells_runs_of_one_method_apart(bas, run):
    fig = plotting.compare_figure(plotting.compare_timelines([bas, run, bas]))
    labels = [ax.get_ylabel() for ax in fig.get_axes()]
    assert len(labels) == 3 * 2 + 1
    assert labels[0] == labels[4] == 'basnet [basnet]\nscore' and labels[2] == 'um\nscore'


def test_compare_refusals_are_one_line_and_write_nothing(tiny_run, basnet_run, bas, run,
                                                         tmp_path, capsys):
    out = tmp_path / 'figures'

    def refused(*args) -> str:
        assert cli.main(['plot', *args, '--out', str(out), '--quiet']) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith('wtal-jax plot: error: ') and '\n' not in err, err
        assert not out.exists()
        return err

    assert 'at least two runs' in refused('--compare', tiny_run)
    pair = ('--compare', tiny_run, basnet_run, '--seed', '0')
    assert 'not in the test split' in refused(*pair, '--video', 'no_such_video')
    assert 'is not one of' in refused(*pair, '--class', 'NoSuchClass')
    # A run evaluated on another split: tiny_run with a test split of four videos.
    other = tmp_path / 'other_split'
    shutil.copytree(tiny_run, other, ignore=shutil.ignore_patterns('plots'))
    with open(other / 'config.json') as f:
        saved = json.load(f)
    names = run.split.names[:4]
    (tmp_path / 'split_test_4.txt').write_text('\n'.join(names) + '\n')
    saved['data']['test']['split_file'] = str(tmp_path / 'split_test_4.txt')
    with open(other / 'config.json', 'w') as f:
        json.dump(saved, f)
    err = refused('--compare', tiny_run, str(other))
    assert 'split (4 videos) differs' in err and 'other_split' in err
    # Another class list (the same run with its classes reversed): refused before any file.
    reversed_classes = dataclasses.replace(run, names=run.names[::-1])
    with pytest.raises(UserError, match=r'class list \(5 classes: Class04, .*\) differs'):
        plotting.write_compare([bas, reversed_classes], str(out))
    assert not out.exists()
