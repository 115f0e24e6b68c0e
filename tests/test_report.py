"""Tests for wtal_jax.postprocess.report and ``wtal-jax map --report``: the averages against hand
computations and separate evaluations, the plain keys unchanged, the video-level metrics, the
snippet protocol through the report, the text, and the command line's answers to bad input."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from wtal_jax import cli
from wtal_jax.errors import UserError
from wtal_jax.postprocess import average_precision, eval_files, snippet, tables
from wtal_jax.postprocess import report as rp
from evaluation_cases import gt_doc, pred_doc, random_case, write_ambiguous, write_json

RESULT_KEYS = {'tiou_thresholds', 'mAP', 'average_mAP', 'ap'}
THUMOS_RANGES = {'0.1:0.5': [0.1, 0.2, 0.3, 0.4, 0.5],
                 '0.1:0.7': [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
                 '0.1:0.9': [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                 '0.3:0.7': [0.3, 0.4, 0.5, 0.6, 0.7]}
ACTIVITYNET_RANGE = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]


@pytest.fixture
def two_instances(tmp_path):
    """One class, two instances; predictions at tIoU 0.5 (5/10) and 0.8 (8/10).

    mAP at t: 1 for t <= 0.5 (TP, TP); 0.25 for 0.5 < t <= 0.8 (FP then TP: recall 1/2 at
    precision 1/2); 0 above 0.8.
    """
    gt = eval_files.load_ground_truth(write_json(tmp_path / 'gt.json', gt_doc({
        'v1': [('A', 0, 10), ('A', 20, 30)], 'v2': []})), 'test')
    preds = eval_files.load_predictions(pred_doc({'v1': [('A', 0.9, 0, 5), ('A', 0.8, 20, 28)]}), gt)
    return gt, preds


def test_thumos14_averages_by_hand(two_instances):
    figures = rp.report(*two_instances)
    assert figures['family'] == 'thumos14' and figures['protocol'] == 'seconds'
    assert figures['averages'] == {
        '0.1:0.5': 1.0,
        '0.1:0.7': pytest.approx((5 + 2 * 0.25) / 7, abs=1e-15),
        '0.1:0.9': pytest.approx((5 + 3 * 0.25) / 9, abs=1e-15),
        '0.3:0.7': pytest.approx((3 + 2 * 0.25) / 5, abs=1e-15)}
    assert list(figures['mAP_by_tiou']) == [f'{t / 10:g}' for t in range(1, 10)]
    assert list(figures['mAP_by_tiou'].values()) == [1] * 5 + [0.25] * 3 + [0]
    assert figures['videos'] == ['v1', 'v2']  # a video without annotations is evaluated too
    assert figures['num_instances'] == 2 and figures['num_predictions'] == 2
    assert figures['videos_without_predictions'] == ['v2']


def test_activitynet_averages_by_hand(two_instances):
    figures = rp.report(*two_instances, tiou_thresholds='0.5:0.95:0.05')
    assert figures['family'] == 'activitynet'
    # 0.5: 1; 0.55 ... 0.8 (six thresholds): 0.25; 0.85, 0.9, 0.95: 0.
    assert figures['averages'] == {'0.5:0.95': pytest.approx((1 + 6 * 0.25) / 10, abs=1e-15)}
    by_tiou = figures['mAP_by_tiou']
    assert (by_tiou['0.5'], by_tiou['0.75'], by_tiou['0.95']) == (1.0, 0.25, 0.0)
    assert figures['average_mAP'] == figures['averages']['0.5:0.95']


def test_family_choice():
    assert rp.choose_family(np.array([0.1, 0.5])) == 'thumos14'
    assert rp.choose_family(np.array([0.5, 0.95])) == 'activitynet'
    assert rp.choose_family(np.array([0.5]), 'thumos14') == 'thumos14'
    assert rp.choose_family(np.array([0.1]), 'activitynet') == 'activitynet'
    with pytest.raises(UserError, match="family 'voc'"):
        rp.choose_family(np.array([0.5]), 'voc')


def test_averages_equal_separate_evaluations(tmp_path):
    # Each average against an independent NumPy mean over mAPs computed one threshold at a time,
    # and against a plain evaluation over the range; the plain keys against a plain evaluation
    # at the requested thresholds, whatever extra thresholds the report evaluated.
    rng = np.random.default_rng(7)
    for case in range(20):
        gt_json, pred_json = random_case(rng)
        gt = eval_files.load_ground_truth(write_json(tmp_path / 'gt.json', gt_json), 'test')
        preds = eval_files.load_predictions(pred_json, gt)
        requested = ['0.1:0.7:0.1', '0.25,0.5', '0.7,0.1', '0.5:0.95:0.05'][case % 4]
        family = 'activitynet' if case % 4 == 3 else 'thumos14'
        figures = rp.report(gt, preds, tiou_thresholds=requested)
        ranges = THUMOS_RANGES if family == 'thumos14' else {'0.5:0.95': ACTIVITYNET_RANGE}
        assert list(figures['averages']) == list(ranges)
        for name, thresholds in ranges.items():
            single = [average_precision.evaluate_detection(gt, preds, [t]).map[0] for t in thresholds]
            assert figures['averages'][name] == np.mean(single), name
            assert figures['averages'][name] == average_precision.evaluate_detection(
                gt, preds, thresholds).average_map, name
            for t, m in zip(thresholds, single):
                assert figures['mAP_by_tiou'][f'{t:g}'] == m
        plain = average_precision.result_to_json(average_precision.evaluate_detection(
            gt, preds, eval_files.parse_tiou_thresholds(requested)))
        assert {k: figures[k] for k in RESULT_KEYS} == plain


def test_video_level_metrics(tmp_path):
    gt = eval_files.load_ground_truth(write_json(tmp_path / 'gt.json', gt_doc({
        'v1': [('B', 0, 1), ('A', 2, 3)], 'v2': [('A', 0, 1)], 'v3': []})), 'test')
    preds = eval_files.load_predictions({'results': {}}, gt)
    # Columns in another order than the ground truth's classes (B, A), plus a class it lacks.
    classes = ('A', 'B', 'C')
    scores = np.array([[0.9, 0.3, 0.1],    # v1: {A, B} = labels {A, B}
                       [0.1, 0.5, 0.0],    # v2: {B} != {A}
                       [0.0, 0.1, 0.05]])  # v3: {} = {}
    labels = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]])
    figures = rp.report(gt, preds, video_scores=rp.VideoLevelScores(
        ('v1', 'v2', 'v3'), classes, scores))
    assert figures['video_accuracy'] == average_precision.video_accuracy(scores, labels) == 2 / 3
    assert figures['classification_mAP'] == average_precision.classification_map(scores, labels)
    assert figures['accuracy_threshold'] == 0.2
    # Rows in another order give the same figures.
    shuffled = rp.report(gt, preds, video_scores=rp.VideoLevelScores(
        ('v3', 'v1', 'v2'), classes, scores[[2, 0, 1]]))
    assert shuffled['video_accuracy'] == figures['video_accuracy']
    assert shuffled['classification_mAP'] == figures['classification_mAP']
    for names, cls, values, problem in [
            (('v1', 'x'), classes, scores[:2], 'videos x are not in subset'),
            (('v1',), ('A',), scores[:1, :1], 'classes B of the ground truth are not scored'),
            (('v1',), classes, scores, 'shape (3, 3)')]:
        with pytest.raises(UserError, match=re.escape(problem)):
            rp.report(gt, preds, video_scores=rp.VideoLevelScores(names, cls, values))


def test_snippet_protocol_through_the_report(tmp_path):
    gt = eval_files.load_ground_truth(write_json(tmp_path / 'gt.json', gt_doc({
        'v1': [('A', 1.0, 2.0), ('A', 5.0, 9.0)]})), 'test')
    preds = eval_files.load_predictions(pred_doc({'v1': [
        ('A', 0.9, 0.64, 1.92), ('A', 0.8, 3.2, 4.8), ('A', 0.7, 5.0, 9.0)]}), gt)
    ambiguous = snippet.load_ambiguous(write_ambiguous(tmp_path / 'amb.txt', [('v1', 3.5, 4.0)]))
    figures = rp.report(gt, preds, protocol='snippet', ambiguous=ambiguous)
    expected = average_precision.evaluate_detection(*snippet.snippet_protocol(gt, preds, ambiguous),
                                     THUMOS_RANGES['0.1:0.9'])
    assert list(figures['mAP_by_tiou'].values()) == expected.map.tolist()
    assert figures['ambiguous_dropped'] == 1 and figures['num_predictions'] == 2
    assert figures['protocol'] == 'snippet'
    with pytest.raises(UserError, match='snippet protocol only'):
        rp.report(gt, preds, ambiguous=ambiguous)
    with pytest.raises(UserError, match="protocol 'frames'"):
        rp.report(gt, preds, protocol='frames')


def test_format_report(two_instances):
    text = tables.format_report(rp.report(*two_instances))
    lines = text.splitlines()
    assert lines[0] == 'protocol: seconds (the official ActivityNet evaluation)'
    assert lines[1] == "subset 'test': 2 videos, 1 class, 2 instances"
    assert lines[2] == '2 predictions evaluated'
    assert 'mAP (%)  | 100.0 100.0 100.0 100.0 100.0 25.0 25.0 25.0 0.0' in lines
    assert 'average over | 0.1:0.5 0.1:0.7 0.1:0.9 0.3:0.7' in lines
    assert 'mAP (%)      |   100.0    78.6    63.9    70.0' in lines
    assert 'A              | 100.0 100.0 100.0 100.0 100.0 25.0 25.0 | 78.6' in lines
    anet = tables.format_report(rp.report(*two_instances, tiou_thresholds='0.5:0.95:0.05'))
    assert 'average over | 0.5:0.95   0.5 0.75 0.95' in anet.splitlines()
    assert 'mAP (%)      |     25.0 100.0 25.0  0.0' in anet.splitlines()


def test_real_thumos14_videos_are_listed(thumos14_dir):
    gt = eval_files.load_ground_truth(os.path.join(thumos14_dir, 'gt.json'), 'test')
    figures = rp.report(gt, eval_files.load_predictions({'results': {}}, gt))
    with open(os.path.join(thumos14_dir, 'split_test.txt')) as f:
        split = [line.strip() for line in f if line.strip()]
    assert sorted(figures['videos']) == sorted(split) and len(split) == 210
    assert not set(rp.THUMOS14_EXCLUDED) & set(figures['videos'])
    assert len(figures['ap']) == 20
    assert "THUMOS'14 test videos 270, 1292 and 1496 are not evaluated" in tables.format_report(
        figures)


# ---------------------------------------------------------------------------------------------
# The command line


def run_map(capsys, *args):
    """``wtal-jax map ARGS`` in this process: (exit status, stdout, stderr)."""
    status = cli.main(['map', *args])
    out = capsys.readouterr()
    return status, out.out, out.err


def assert_one_line_error(result, *words):
    status, out, err = result
    assert status == 2 and 'Traceback' not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('wtal-jax map: error: '), err
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture
def files(tmp_path):
    gt_path = write_json(tmp_path / 'gt.json', gt_doc({
        'v1': [('A', 0, 10), ('A', 20, 30)], 'v2': [('B', 0, 10)]}))
    pred_path = write_json(tmp_path / 'p.json', pred_doc({
        'v1': [('A', 0.9, 0, 5), ('A', 0.8, 20, 28)], 'v2': [('B', 0.7, 1, 9)]}))
    return gt_path, pred_path


def test_map_report_json_keeps_the_plain_keys(files, tmp_path, capsys):
    gt_path, pred_path = files
    plain_json, report_json = tmp_path / 'plain.json', tmp_path / 'report.json'
    status, out, _ = run_map(capsys, '--ground-truth', gt_path, '--predictions', pred_path,
                             '--json', str(plain_json))
    assert status == 0 and out.startswith('mAP@tIoU')
    status, out, err = run_map(capsys, '--ground-truth', gt_path, '--predictions', pred_path,
                               '--json', str(report_json), '--report')
    assert status == 0 and err == ''
    assert 'average over | 0.1:0.5 0.1:0.7 0.1:0.9 0.3:0.7' in out
    plain, full = json.loads(plain_json.read_text()), json.loads(report_json.read_text())
    assert set(plain) == RESULT_KEYS
    assert {k: full[k] for k in RESULT_KEYS} == plain
    assert {'averages', 'videos', 'mAP_by_tiou'} <= set(full)
    assert set(full['averages']) == set(THUMOS_RANGES) and full['videos'] == ['v1', 'v2']


def test_map_snippet_protocol_on_real_thumos14(thumos14_dir, tmp_path, capsys):
    gt_path = os.path.join(thumos14_dir, 'gt.json')
    ambiguous_path = os.path.join(thumos14_dir, 'ambiguous_test.txt')
    gt = eval_files.load_ground_truth(gt_path, 'test')
    # The ground truth itself as predictions: on the snippet grid, what is lost are the
    # predictions over ambiguous segments and the instances that round to zero length.
    pred_path = write_json(tmp_path / 'p.json', {'results': {
        v: [{'label': gt.class_names[c], 'score': 1.0, 'segment': s.tolist()}
            for c, s in zip(gt.label[gt.video == i], gt.segments[gt.video == i])]
        for i, v in enumerate(gt.video_names)}})
    out_path = tmp_path / 'out.json'
    status, out, err = run_map(capsys, '--ground-truth', gt_path, '--predictions', pred_path,
                               '--protocol', 'snippet', '--ambiguous', ambiguous_path,
                               '--report', '--json', str(out_path))
    assert status == 0 and err == ''
    figures = json.loads(out_path.read_text())
    grid_gt, grid_preds = snippet.snippet_protocol(gt, eval_files.load_predictions(pred_path, gt),
                                              snippet.load_ambiguous(ambiguous_path))
    assert figures['ambiguous_dropped'] == len(gt.label) - len(grid_preds.score) > 0
    assert figures['mAP'] == average_precision.evaluate_detection(grid_gt, grid_preds,
                                                   THUMOS_RANGES['0.1:0.7']).map.tolist()
    assert 0.9 < figures['average_mAP'] < 1.0
    assert f'{figures["ambiguous_dropped"]} predictions overlapping ambiguous segments' in out
    # Without --report: the plain keys and the protocol.
    status, out, err = run_map(capsys, '--ground-truth', gt_path, '--predictions', pred_path,
                               '--protocol', 'snippet', '--ambiguous', ambiguous_path,
                               '--json', str(out_path))
    plain = json.loads(out_path.read_text())
    assert plain == {**{k: figures[k] for k in RESULT_KEYS}, 'protocol': 'snippet'}


def test_map_warns_about_videos_without_predictions(tmp_path, capsys):
    gt_path = write_json(tmp_path / 'gt.json', gt_doc({f'v{i:03d}': [('A', 0, 10)]
                                                      for i in range(100)}))
    pred_path = write_json(tmp_path / 'p.json', pred_doc({'v010': [('A', 0.9, 0, 10)],
                                                          'v020': [('A', 0.8, 0, 10)]}))
    status, out, err = run_map(capsys, '--ground-truth', gt_path, '--predictions', pred_path)
    assert status == 0 and 'mAP (%)  | 2.0 2.0 2.0 2.0 2.0 2.0 2.0 | 2.0' in out
    assert err.splitlines() == [
        "wtal-jax map: warning: 98 of the 100 ground-truth videos of subset 'test' have no "
        'predictions (first: v000); their instances count as missed']


def test_map_snippet_without_ambiguous_list_warns(files, capsys):
    status, _, err = run_map(capsys, '--ground-truth', files[0], '--predictions', files[1],
                             '--protocol', 'snippet')
    assert status == 0 and 'no --ambiguous list' in err


def test_map_bad_input_is_one_line(files, tmp_path, capsys):
    gt_path, pred_path = files
    base = ('--ground-truth', gt_path, '--predictions', pred_path)
    deep = tmp_path / 'deep.json'
    deep.write_text('{"results": ' + '[' * 100_000 + ']' * 100_000 + '}')
    assert_one_line_error(run_map(capsys, '--ground-truth', gt_path, '--predictions', str(deep)),
                          str(deep), 'nested too deeply')
    assert_one_line_error(run_map(capsys, '--ground-truth', str(deep), '--predictions', pred_path),
                          str(deep), 'nested too deeply')
    folder = tmp_path / 'out'
    folder.mkdir()
    assert_one_line_error(run_map(capsys, *base, '--json', str(folder)), str(folder), 'folder')
    assert os.listdir(folder) == []
    blocked = tmp_path / 'file'
    blocked.write_text('keep')
    assert_one_line_error(run_map(capsys, *base, '--json', str(blocked / 'x.json')),
                          str(blocked / 'x.json'), 'is not a folder')
    assert blocked.read_text() == 'keep'
    assert_one_line_error(run_map(capsys, *base, '--ambiguous', gt_path), '--protocol snippet')
    assert_one_line_error(run_map(capsys, *base, '--family', 'thumos14'), '--report')
    assert_one_line_error(run_map(capsys, *base, '--protocol', 'snippet', '--ambiguous',
                                  str(tmp_path / 'none.txt')), 'none.txt', 'cannot read')


def test_report_does_not_import_jax():
    code = 'import sys, wtal_jax.postprocess.report; print("jax" in sys.modules)'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'False'


# ---------------------------------------------------------------------------------------------
# The text, as a new user reads it


def _figures(tmp_path, videos: dict, classes=None):
    """The report of one prediction per instance (exact: AP 1) on ``videos``."""
    gt = eval_files.load_ground_truth(write_json(tmp_path / 'gt.json', gt_doc(videos)), 'test')
    preds = eval_files.load_predictions(pred_doc({
        v: [(c, 0.9, s, e) for c, s, e in instances] for v, instances in videos.items()
        if instances}), gt)
    return rp.report(gt, preds)


def test_the_thumos14_note_is_for_thumos14_alone(tmp_path, thumos14_dir):
    # A generated set that names its videos as THUMOS'14 does: not THUMOS'14, no note.
    named_alike = _figures(tmp_path, {'video_test_0000004': [('Class00', 0, 5)]})
    assert 'THUMOS' not in tables.format_report(named_alike)
    assert 'release' not in tables.format_report(named_alike)
    # THUMOS'14's own ground truth: the note, in lines of at most 80 columns.
    gt = eval_files.load_ground_truth(os.path.join(thumos14_dir, 'gt.json'), 'test')
    text = tables.format_report(rp.report(gt, eval_files.load_predictions({'results': {}}, gt)))
    assert "THUMOS'14 test videos 270, 1292 and 1496 are not evaluated, as in the" in text
    assert all(len(line) <= 80 for line in text.splitlines()), max(text.splitlines(), key=len)


def test_the_header_names_the_json_written_and_counts_in_words(two_instances):
    figures = rp.report(*two_instances)
    text = tables.format_report(figures)
    assert '--json' not in text and '"videos" in' not in text
    assert "subset 'test': 2 videos, 1 class, 2 instances" in text.splitlines()
    assert '1 video without predictions' in text.splitlines()
    written = tables.format_report(figures, written='run/metrics_test.json')
    assert 'the evaluated videos: "videos" in run/metrics_test.json' in written.splitlines()


def test_per_class_rows_follow_the_class_order(tmp_path):
    # The official evaluation indexes classes by first appearance: Zebra, then Apple, then Mango.
    figures = _figures(tmp_path, {'v1': [('Zebra', 0, 5)], 'v2': [('Apple', 0, 5)],
                                  'v3': [('Mango', 0, 5)]})
    assert list(figures['ap']) == ['Zebra', 'Apple', 'Mango']

    def rows(text):
        lines = text.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith('AP (%) at tIoU'))
        return [line.split()[0] for line in lines[start + 1:-1]]

    assert rows(tables.format_report(figures)) == ['Apple', 'Mango', 'Zebra']
    assert rows(tables.format_report(figures, class_names=('Mango', 'Zebra', 'Apple'))) == [
        'Mango', 'Zebra', 'Apple']
    assert tables.class_order(['b', 'x', 'a'], ['x']) == ['x', 'a', 'b']


def test_every_line_of_a_report_fits_80_columns(two_instances):
    figures = rp.report(*two_instances, video_scores=rp.VideoLevelScores(
        ['v1', 'v2'], ['A'], np.array([[0.9], [0.1]])))
    for thresholds in ('0.1:0.7:0.1', '0.5:0.95:0.05'):
        text = tables.format_report(rp.report(*two_instances, tiou_thresholds=thresholds))
        assert all(len(line) <= 80 for line in text.splitlines()), text
    text = tables.format_report(figures, written='x' * 40)
    # Both videos' predicted class sets ({A}; none above 0.2) equal their labels: 100 %.
    assert 'video accuracy 100.0 % (class set {c : score >= 0.2} equals the labels)' in text
    assert all(len(line) <= 80 for line in text.splitlines()), text
