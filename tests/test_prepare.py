"""``wtal-jax prepare``: public releases into the project's layout, and the data it writes trains.

Expected values are computed from the source files directly (their JSON, their feature files),
never from what ``prepare`` returns.
"""

import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from wtal_jax import config
from wtal_jax.data import dataset, prepare, synthetic_activitynet
from wtal_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANET13 = os.path.join(REPO, 'configs', 'activitynet13.py')
THUMOS14 = os.path.join(REPO, 'configs', 'thumos14.py')
ANET = dict(num_classes=4, num_training=24, num_validation=12, num_testing=3, feature_dim=8,
            min_segments=20, max_segments=80, seed=2)


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, '-m', 'wtal_jax', *args], capture_output=True,
                          text=True, env=dict(os.environ, JAX_PLATFORMS='cpu'), timeout=300,
                          cwd=cwd)


def assert_ok(proc):
    assert proc.returncode == 0, f'stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}'
    assert 'Traceback' not in proc.stderr


def assert_one_line_error(proc, *words, command='prepare'):
    assert proc.returncode == 2, f'rc {proc.returncode}\n{proc.stdout}\n{proc.stderr}'
    assert 'Traceback' not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f'wtal-jax {command}: error: '), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def snapshot(folder):
    """Every entry below ``folder``: kind, size, modification time and content hash."""
    seen = {}
    for here, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(here, name)
            st = os.lstat(path)
            digest = None
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, 'rb') as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            seen[os.path.relpath(path, folder)] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return seen


def read_lines(path):
    with open(path) as f:
        return f.read().splitlines()


def table_row(stdout, subset):
    """The numbers of one subset's row of the printed summary."""
    match = re.search(rf'^{subset}\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$', stdout, re.M)
    assert match, stdout
    return tuple(int(x) for x in match.groups())


def expected_activitynet(source):
    """What the source release holds, per subset, read directly from its files."""
    with open(source['annotation_file']) as f:
        database = json.load(f)['database']
    have = set()
    for here, _, files in os.walk(source['features']):
        have |= {f[len('v_'):-len('.npy')] for f in files if f.startswith('v_')}
    expected = {}
    for subset in ('training', 'validation'):
        videos = [v for v, e in database.items() if e['subset'] == subset]
        with_features = [v for v in videos if v in have]
        clipped = sum(a['segment'][1] > database[v]['duration'] or a['segment'][0] < 0
                      for v in with_features for a in database[v]['annotations'])
        expected[subset] = dict(videos=videos, with_features=with_features,
                                missing=[v for v in videos if v not in have], clipped=clipped)
    return database, expected


# ----------------------------------------------------------------------------------------------
# ActivityNet-shaped release (synthetic) → prepare → layout → train


@pytest.fixture(scope='module')
def anet_prepared(tmp_path_factory):
    base = tmp_path_factory.mktemp('anet')
    source = synthetic_activitynet.generate(str(base / 'release'), **ANET)
    before = snapshot(str(base / 'release'))
    out = str(base / 'ActivityNet1.3')
    proc = run_cli('prepare', 'activitynet', '--annotations', source['annotation_file'],
                   '--features', source['features'], '--out', out)
    assert_ok(proc)
    assert 'features: 100%' in proc.stderr  # the progress bar (no --quiet)
    assert snapshot(str(base / 'release')) == before  # the release is not touched
    return source, out, proc.stdout


def test_activitynet_generator_is_shaped_like_the_release(anet_prepared):
    source, _, _ = anet_prepared
    with open(source['annotation_file']) as f:
        raw = json.load(f)
    assert raw['version'] == 'VERSION 1.3' and len(raw['taxonomy']) == ANET['num_classes']
    database = raw['database']
    assert len(database) == 24 + 12 + 3
    assert all(re.fullmatch(r'[A-Za-z0-9_-]{11}', v) for v in database)   # bare YouTube ids
    assert {e['subset'] for e in database.values()} == {'training', 'validation', 'testing'}
    labels = {a['label'] for e in database.values() for a in e['annotations']}
    assert any(', ' in label for label in labels) and all(' ' in l for l in labels - {'Knitting'})
    assert all(not e['annotations'] for e in database.values() if e['subset'] == 'testing')
    coverage = [sum(min(e['duration'], b) - max(0, a) for a, b in
                    (x['segment'] for x in e['annotations'])) / e['duration']
                for e in database.values() if e['annotations']]
    assert np.mean(np.array(coverage) > 0.76) > 0.25   # long actions are common
    files = os.listdir(source['features'])
    assert all(f.startswith('v_') and f.endswith('.npy') for f in files)
    missing = len(database) - len(files)
    assert missing == 2  # one training, one validation video: 2 of 36 (~3% at real scale)
    first = np.load(os.path.join(source['features'], files[0]))
    assert first.dtype == np.float32 and first.shape[1] == 2 * ANET['feature_dim']


def test_activitynet_layout_summary_and_missing_list(anet_prepared):
    source, out, stdout = anet_prepared
    database, expected = expected_activitynet(source)
    assert sorted(os.listdir(out)) == sorted([
        'gt.json', 'split_training.txt', 'split_validation.txt', 'features',
        prepare.MISSING_FILE, prepare.MARKER_FILE])
    with open(os.path.join(out, 'gt.json')) as f:
        written = json.load(f)['database']
    chosen = {v: e for v, e in database.items() if e['subset'] != 'testing'}
    assert list(written) == list(chosen)  # all videos of the subsets, missing ones included
    for video, entry in chosen.items():
        assert written[video]['subset'] == entry['subset']
        assert written[video]['duration'] == entry['duration']
        assert written[video]['annotations'] == [
            {'segment': [float(a['segment'][0]), float(a['segment'][1])], 'label': a['label']}
            for a in entry['annotations']]
    missing_lines = []
    for subset, e in expected.items():
        assert read_lines(os.path.join(out, f'split_{subset}.txt')) == e['with_features']
        assert table_row(stdout, subset) == (len(e['videos']), len(e['with_features']),
                                             len(e['missing']), 0, e['clipped'])
        missing_lines += [f'{v}\t{subset}\tno feature file' for v in e['missing']]
    assert sum(e['clipped'] for e in expected.values()) > 0  # the case is exercised
    assert read_lines(os.path.join(out, prepare.MISSING_FILE)) == missing_lines
    assert f'missing: {len(missing_lines)} videos' in stdout
    assert 'split and written as float32 halves' in stdout
    assert len(stdout.strip().splitlines()) <= 8  # one summary


def test_activitynet_features_are_the_halves_of_the_joint_files(anet_prepared):
    source, out, _ = anet_prepared
    _, expected = expected_activitynet(source)
    d = ANET['feature_dim']
    for subset, e in expected.items():
        for video in e['with_features'][:5]:
            joint = np.load(os.path.join(source['features'], f'v_{video}.npy'))
            for stream, half in (('rgb', joint[:, :d]), ('flow', joint[:, d:])):
                written = np.load(os.path.join(out, 'features', subset, stream, video + '.npy'))
                assert written.dtype == np.float32 and written.shape == (len(joint), d)
                np.testing.assert_array_equal(written, half)


def test_activitynet_prepared_data_loads_with_the_config(anet_prepared):
    source, out, _ = anet_prepared
    _, expected = expected_activitynet(source)
    cfg = config.load_config(ANET13, [f'--config.data.root={out}', '--config.data.feature_dim=16'])
    for part in ('train', 'test'):
        p = cfg.data[part]
        split = dataset.load_split(
            cfg.data.root, annotation_file=cfg.data.annotation_file, split_file=p.split_file,
            feature_dir=p.feature_dir, subset=p.subset, modality=cfg.data.modality,
            class_names=synthetic_activitynet.class_names(ANET['num_classes']),
            feature_dim=cfg.data.feature_dim, use_duration=cfg.data.use_duration,
            require_labels=part == 'train', missing=cfg.data.missing)
        assert list(split.names) == expected[p.subset]['with_features']
        joint = np.load(os.path.join(source['features'], f'v_{split.names[0]}.npy'))
        np.testing.assert_array_equal(split.features[0], joint)   # [rgb, flow] back together


# ----------------------------------------------------------------------------------------------
# ... → train (configs/activitynet13.py, small) → evaluate → map --report → detect --durations

SMALL = ['--config.data.feature_dim=16', '--config.model.embed_dim=16',
         '--config.train.batch_size=4', '--config.train.num_steps=4',
         '--config.eval.every_steps=2', '--config.checkpoint.every_steps=2',
         '--config.eval.chunk_segments=256']   # T = 50, r_bkg, thresholds: the config's own


@pytest.fixture(scope='module')
def anet_trained(anet_prepared, tmp_path_factory):
    """A run of configs/activitynet13.py on the prepared set, evaluated on validation."""
    source, out, _ = anet_prepared
    workdir = str(tmp_path_factory.mktemp('anet_run') / 'run')
    train = run_cli('train', '--config', ANET13, '--workdir', workdir, '--quiet',
                    f'--config.data.root={out}', *SMALL)
    assert_ok(train)
    evaluate = run_cli('evaluate', '--workdir', workdir, '--quiet')
    assert_ok(evaluate)
    return source, out, workdir, train, evaluate


def read_json(path):
    with open(path) as f:
        return json.load(f)


def test_activitynet_trains_with_the_config(anet_trained):
    _, _, workdir, _, _ = anet_trained
    rows = [json.loads(line) for line in read_lines(os.path.join(workdir, 'metrics.jsonl'))]
    evaluations = [r for r in rows if 'average_mAP' in r]
    assert evaluations and evaluations[-1]['step'] == 4
    assert 0.0 <= evaluations[-1]['average_mAP'] <= 1.0
    np.testing.assert_allclose(evaluations[-1]['tiou_thresholds'], np.linspace(0.5, 0.95, 10))
    saved = read_json(os.path.join(workdir, 'config.json'))
    assert saved['data']['num_segments'] == 50 and saved['data']['use_duration']


def test_activitynet_evaluate_names_the_validation_subset(anet_trained):
    source, _, workdir, _, evaluate = anet_trained
    _, expected = expected_activitynet(source)
    assert evaluate.stdout.startswith('validation split, checkpoint step ')
    assert 'results_validation.json' in evaluate.stdout
    assert not [f for f in os.listdir(workdir) if '_test' in f]
    results = read_json(os.path.join(workdir, 'results_validation.json'))['results']
    assert sorted(results) == sorted(expected['validation']['with_features'])
    metrics = read_json(os.path.join(workdir, 'metrics_validation.json'))
    assert metrics['split'] == 'validation'
    np.testing.assert_allclose(metrics['tiou_thresholds'], np.linspace(0.5, 0.95, 10))


def map_report(ground_truth, predictions, json_path):
    proc = run_cli('map', '--ground-truth', ground_truth, '--predictions', predictions,
                   '--subset', 'validation', '--tiou-thresholds', '0.5:0.95:0.05', '--report',
                   '--json', json_path)
    assert_ok(proc)
    return proc.stdout, read_json(json_path)


def test_activitynet_map_report_on_the_written_results(anet_trained, tmp_path):
    source, out, workdir, _, _ = anet_trained
    database, expected = expected_activitynet(source)
    results = os.path.join(workdir, 'results_validation.json')
    stdout, figures = map_report(os.path.join(out, 'gt.json'), results, str(tmp_path / 'a.json'))
    assert '0.5:0.95' in stdout
    assert figures['family'] == 'activitynet' and list(figures['averages']) == ['0.5:0.95']
    assert figures['averages']['0.5:0.95'] == pytest.approx(np.mean(figures['mAP']), abs=1e-12)
    assert figures['average_mAP'] > 0   # the small run finds something: the AP is exercised
    # Every validation video is evaluated, those without features too: their ground truth is
    # missed (the official convention).
    validation = [v for v, e in database.items() if e['subset'] == 'validation']
    assert figures['videos'] == validation
    assert set(expected['validation']['missing']) <= set(figures['videos_without_predictions'])
    assert figures['num_instances'] == sum(len(database[v]['annotations']) for v in validation)

    # evaluate counts the videos without features as missed too: the same figures.
    metrics = read_json(os.path.join(workdir, 'metrics_validation.json'))
    np.testing.assert_allclose(metrics['mAP'], figures['mAP'], atol=1e-12)
    assert metrics['average_mAP'] == pytest.approx(figures['average_mAP'], abs=1e-12)


def test_activitynet_detect_with_durations_matches_evaluation(anet_trained, tmp_path):
    """Durations from the official JSON place detections where evaluation placed them; the
    release's own v_ID.npy files take the bare id of that JSON."""
    source, out, workdir, _, _ = anet_trained
    _, expected = expected_activitynet(source)
    videos = expected['validation']['with_features'][:3]
    specs = [os.path.join(source['features'], f'v_{v}.npy') for v in videos[:2]]   # joint
    specs.append(','.join(os.path.join(out, 'features', 'validation', s, videos[2] + '.npy')
                          for s in ('rgb', 'flow')))
    output = str(tmp_path / 'detections.json')
    proc = run_cli('detect', '--checkpoint', workdir, '--output', output,
                   '--durations', source['annotation_file'], *specs)
    assert_ok(proc)
    assert 'detections for 3 videos' in proc.stdout
    detected = read_json(output)['results']
    evaluated = read_json(os.path.join(workdir, 'results_validation.json'))['results']
    assert list(detected) == videos
    for video in videos:   # same checkpoint (best), features and durations: same detections
        a, b = detected[video], evaluated[video]
        assert a and [d['label'] for d in a] == [d['label'] for d in b]
        np.testing.assert_allclose([d['score'] for d in a], [d['score'] for d in b], rtol=1e-5)
        np.testing.assert_allclose([d['segment'] for d in a], [d['segment'] for d in b],
                                   rtol=1e-6)


def test_activitynet_detect_without_durations_says_what_is_needed(anet_trained, tmp_path):
    source, _, workdir, _, _ = anet_trained
    spec = os.path.join(source['features'], sorted(os.listdir(source['features']))[0])
    output = tmp_path / 'detections.json'
    proc = run_cli('detect', '--checkpoint', workdir, '--output', str(output), spec)
    assert_one_line_error(proc, workdir, 'data.use_duration', '--durations FILE',
                          command='detect')
    assert not output.exists()


def test_detect_warns_when_durations_are_unused(anet_trained, tmp_path, capsys):
    from wtal_jax.runs import detect
    source, _, workdir, _, _ = anet_trained
    spec = os.path.join(source['features'], sorted(os.listdir(source['features']))[0])
    results = detect.detect(workdir, [spec], output=str(tmp_path / 'd.json'),
                                durations=source['annotation_file'],
                                overrides=['data.use_duration=false'])
    assert list(results['results']) == [os.path.basename(spec)[:-len('.npy')]]  # name unchanged
    warning = capsys.readouterr().err.strip()
    assert warning == (f'warning: --durations {source["annotation_file"]} is unused: {workdir} '
                       'places detections on the segment grid (data.use_duration is False)')


@pytest.mark.parametrize('case', ['FIFO', 'repeated video'])
def test_detect_refuses_an_unreadable_durations_file_in_one_line(anet_trained, tmp_path, case):
    """Durations files go through the bounded reader: a FIFO hung detect, a repeated video
    took its last duration silently."""
    source, _, workdir, _, _ = anet_trained
    spec = os.path.join(source['features'], sorted(os.listdir(source['features']))[0])
    durations = tmp_path / 'durations.json'
    if case == 'FIFO':
        os.mkfifo(durations)
        words = [f'{durations}: cannot read: is a named pipe (FIFO)']
    else:
        durations.write_text('{"abc": 12.5, "def": 3.25, "abc": 14.0}')
        words = [f"{durations}: key 'abc' is given twice in one object"]
    output = tmp_path / 'detections.json'
    output.write_text('{"results": {}}')
    proc = run_cli('detect', '--checkpoint', workdir, '--output', str(output), '--force',
                   '--durations', str(durations), spec)
    assert_one_line_error(proc, *words, command='detect')
    assert output.read_text() == '{"results": {}}'


def test_read_durations_forms(tmp_path):
    from wtal_jax.runs.detect import read_durations
    forms = {'plain.json': {'abc': 12.5, 'def': '3.25'},
             'objects.json': {'abc': {'duration': 12.5, 'fps': 30.0}, 'def': {'duration': 3.25}},
             'annotations.json': {'version': 'VERSION 1.3', 'database': {
                 'abc': {'subset': 'validation', 'duration': 12.5, 'annotations': []},
                 'def': {'subset': 'testing', 'duration': '3.25', 'annotations': []},
                 'ghi': {'subset': 'testing', 'annotations': []}}}}   # no duration: left out
    for name, content in forms.items():
        (tmp_path / name).write_text(json.dumps(content))
        assert read_durations(str(tmp_path / name)) == {'abc': 12.5, 'def': 3.25}, name


@pytest.mark.parametrize('content,words', [
    ([1, 2], ['expected a JSON object', 'list']),
    ({'abc': {'fps': 30}}, ['video abc', 'without "duration"']),
    ({'abc': -1.0}, ['video abc', 'not positive']),
    ({'abc': 'long'}, ['video abc', "'long' is not a number"]),
    ({'database': {'abc': {'subset': 'x', 'duration': 0}}}, ['video abc', 'not positive']),
])
def test_read_durations_refuses_bad_files(tmp_path, content, words):
    from wtal_jax.runs.detect import read_durations
    path = tmp_path / 'durations.json'
    path.write_text(json.dumps(content))
    with pytest.raises(UserError) as info:
        read_durations(str(path))
    assert str(path) in str(info.value) and '\n' not in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_match_durations_prefers_the_exact_id_and_counts_the_missing():
    from wtal_jax.runs.detect import match_durations
    ids, seconds = match_durations(['v_abc', 'def', 'v_ghi'],
                                   {'abc': 1.0, 'def': 2.0, 'v_ghi': 3.0, 'ghi': 4.0}, 'd.json')
    assert ids == ['abc', 'def', 'v_ghi']
    np.testing.assert_array_equal(seconds, [1.0, 2.0, 3.0])
    with pytest.raises(UserError, match=r'^d.json: no duration for 2 of 3 videos \(e.g. v_x, y\)$'):
        match_durations(['v_x', 'abc', 'y'], {'abc': 1.0}, 'd.json')


def test_separate_float16_streams_are_linked_not_copied(tmp_path):
    source = synthetic_activitynet.generate(
        str(tmp_path / 'release'), **{**ANET, 'num_training': 6, 'num_validation': 4,
                                      'num_testing': 0, 'layout': 'separate',
                                      'dtype': 'float16'})
    out = str(tmp_path / 'out')
    summary = prepare.prepare('activitynet', annotations=[source['annotation_file']],
                              features=source['features'], out=out)
    _, expected = expected_activitynet(source)
    count = sum(len(e['with_features']) for e in expected.values())
    assert (summary.linked, summary.float16, summary.split_joint) == (2 * count, 2 * count, 0)
    assert 'float16 files linked as they are' in prepare.format_summary(summary)
    video = expected['validation']['with_features'][0]
    for stream in ('rgb', 'flow'):
        link = os.path.join(out, 'features', 'validation', stream, video + '.npy')
        original = os.path.join(source['features'], stream, f'v_{video}.npy')
        assert os.path.islink(link) and os.path.realpath(link) == os.path.realpath(original)
        loaded = dataset.load_feature_array(link)
        assert loaded.dtype == np.float32
        np.testing.assert_array_equal(loaded, np.load(original).astype(np.float32))


# ----------------------------------------------------------------------------------------------
# THUMOS'14: the real annotations, in the release's gt.json form and as official class files


def thumos14_features(thumos14_dir, folder, per_subset=5):
    """Fake features of each video's real length for the first videos of both split files."""
    with open(os.path.join(thumos14_dir, 'durations.json')) as f:
        durations = json.load(f)
    lengths = {}
    for split in ('train', 'test'):
        names = read_lines(os.path.join(thumos14_dir, f'split_{split}.txt'))[:per_subset]
        for name in names:
            lengths[name] = int(durations[name]['duration'] * 25 / 16)
            for stream in ('rgb', 'flow'):   # the UM release's layout
                os.makedirs(os.path.join(folder, split, stream), exist_ok=True)
                np.save(os.path.join(folder, split, stream, name + '.npy'),
                        np.full((lengths[name], 4), len(name), np.float32))
    return lengths


def annotation_rows(database):
    """{video: (subset, sorted (label, start, end))} of a parsed ActivityNet-style database."""
    return {v: (e['subset'], sorted((a['label'], float(a['segment'][0]), float(a['segment'][1]))
                                    for a in e['annotations']))
            for v, e in database.items()}


def check_thumos14_output(thumos14_dir, out, lengths, summary, order):
    """``order``: the video order expected in the output, from the real gt.json's order."""
    with open(os.path.join(thumos14_dir, 'gt.json')) as f:
        real = json.load(f)['database']
    with open(os.path.join(out, 'gt.json')) as f:
        written = json.load(f)['database']
    assert annotation_rows(written) == annotation_rows(real)
    assert list(written) == order(list(real))
    for subset in ('train', 'test'):
        split = read_lines(os.path.join(out, f'split_{subset}.txt'))
        assert split == [v for v in order(list(real)) if real[v]['subset'] == subset and
                         v in lengths]
        count = next(c for c in summary.subsets if c.subset == subset)
        videos = sum(e['subset'] == subset for e in real.values())
        clipped = 0
        for v in split:
            segments = np.array([[float(x) for x in a['segment']]
                                 for a in real[v]['annotations']])
            clipped += int(((segments > lengths[v] * 16 / 25) | (segments < 0)).any(axis=1).sum())
        assert count == prepare.SubsetCount(subset, videos, len(split), videos - len(split), 0,
                                            clipped)
        assert len(read_lines(os.path.join(out, prepare.MISSING_FILE))) == 410 - len(lengths)
    cfg = config.load_config(THUMOS14, [f'--config.data.root={out}', '--config.data.feature_dim=8'])
    split = dataset.load_split(out, annotation_file='gt.json', split_file=cfg.data.test.split_file,
                               feature_dir=cfg.data.test.feature_dir, subset=cfg.data.test.subset,
                               modality='all', class_names=cfg.data.class_names, feature_dim=8)
    assert len(split) == 5 and split.num_clipped == summary.subsets[1].clipped


def test_thumos14_from_the_release_gt_json(thumos14_dir, tmp_path):
    lengths = thumos14_features(thumos14_dir, str(tmp_path / 'features'))
    summary = prepare.prepare('thumos14', annotations=[os.path.join(thumos14_dir, 'gt.json')],
                              features=str(tmp_path / 'features'), out=str(tmp_path / 'out'))
    # The annotation file's own order, kept.
    check_thumos14_output(thumos14_dir, str(tmp_path / 'out'), lengths, summary, list)
    assert summary.renamed == () and summary.excluded == ()
    assert summary.linked == 2 * 10 and summary.split_joint == 0


def test_thumos14_from_the_official_class_files(thumos14_dir, tmp_path):
    """Class files written from the real gt.json give it back; Ambiguous and 270 are left out."""
    with open(os.path.join(thumos14_dir, 'gt.json')) as f:
        real = json.load(f)['database']
    lines = {}
    for video, entry in real.items():
        part = 'val' if entry['subset'] == 'train' else 'test'
        for a in entry['annotations']:
            lines.setdefault(f'{a["label"]}_{part}.txt', []).append(
                f'{video}  {a["segment"][0]} {a["segment"][1]}')   # two spaces, as released
    lines['CricketBowling_test.txt'].append('video_test_0000270  5.0 9.5')  # excluded (SPEC §1)
    folders = {'val': tmp_path / 'annotation_val', 'test': tmp_path / 'annotation_test'}
    for folder in folders.values():
        folder.mkdir()
    for name, rows in lines.items():
        folder = folders['val' if name.endswith('_val.txt') else 'test']
        (folder / name).write_text('\n'.join(rows) + '\n')
    ambiguous = read_lines(os.path.join(thumos14_dir, 'ambiguous_test.txt'))
    (folders['test'] / 'Ambiguous_test.txt').write_text('\n'.join(ambiguous) + '\n')
    lengths = thumos14_features(thumos14_dir, str(tmp_path / 'features'))
    summary = prepare.prepare('thumos14', annotations=[str(f) for f in folders.values()],
                              features=str(tmp_path / 'features'), out=str(tmp_path / 'out'))
    # Sorted by id, as the release's split files are.
    check_thumos14_output(thumos14_dir, str(tmp_path / 'out'), lengths, summary, sorted)
    assert summary.renamed == (('validation', 'train'),)
    assert summary.excluded == ('video_test_0000270',)
    text = prepare.format_summary(summary)
    assert 'validation -> train' in text and 'video_test_0000270' in text


def test_thumos14_class_file_errors(tmp_path):
    bad = tmp_path / 'HighJump_val.txt'
    bad.write_text('video_validation_0000001 3.0\n')
    with pytest.raises(UserError, match=r'HighJump_val.txt: line 1 .*VIDEO START END'):
        prepare.read_thumos14_txt([str(bad)])
    bad.write_text('video_validation_0000001 3.0 1.0\n')
    with pytest.raises(UserError, match='start <= end'):
        prepare.read_thumos14_txt([str(bad)])
    other = tmp_path / 'notes.txt'
    other.write_text('x\n')
    with pytest.raises(UserError, match='CLASS_val.txt'):
        prepare.read_thumos14_txt([str(other)])


# ----------------------------------------------------------------------------------------------
# The W-TALC single-file release (a pickle): only with --trust-pickle


def write_wtalc(folder, videos, name='Thumos14reduced'):
    """The W-TALC release format: NAME-I3D-JOINTFeatures.npy and NAME-Annotations/*.npy.

    videos: [(video, subset, [(start, end, label), ...], duration, (n, 2d) array)]. Strings are
    bytes where the release stores bytes (videoname, subset, classlist), str in labels.
    """
    def objects(values):
        array = np.empty(len(values), object)
        for i, value in enumerate(values):
            array[i] = value
        return array

    np.save(os.path.join(folder, f'{name}-I3D-JOINTFeatures.npy'),
            objects([v[4] for v in videos]), allow_pickle=True)
    annotations = os.path.join(folder, f'{name}-Annotations')
    os.makedirs(annotations)
    np.save(os.path.join(annotations, 'videoname.npy'), np.array([v[0].encode() for v in videos]))
    np.save(os.path.join(annotations, 'subset.npy'), np.array([v[1].encode() for v in videos]))
    np.save(os.path.join(annotations, 'segments.npy'),
            objects([[[s, e] for s, e, _ in v[2]] for v in videos]), allow_pickle=True)
    np.save(os.path.join(annotations, 'labels.npy'),
            objects([[label for _, _, label in v[2]] for v in videos]), allow_pickle=True)
    np.save(os.path.join(annotations, 'labels_all.npy'),
            objects([sorted({label for _, _, label in v[2]}) for v in videos]), allow_pickle=True)
    classes = sorted({label for v in videos for _, _, label in v[2]})
    np.save(os.path.join(annotations, 'classlist.npy'), np.array([c.encode() for c in classes]))
    np.save(os.path.join(annotations, 'duration.npy'), np.array([[v[3]] for v in videos]))
    return os.path.join(folder, f'{name}-I3D-JOINTFeatures.npy'), annotations


def wtalc_videos(rng, prefix=''):
    return [
        (f'{prefix}video_validation_0000051', 'validation', [(1.5, 4.0, 'HighJump')], 20.0,
         rng.random((30, 6)).astype(np.float32)),
        (f'{prefix}video_validation_0000052', 'validation',
         [(0.0, 2.5, 'Diving'), (3.0, 30.0, 'CliffDiving')], 30.0,
         rng.random((40, 6)).astype(np.float32)),
        (f'{prefix}video_test_0000004', 'test', [(2.0, 3.0, 'Diving')], 12.0,
         rng.random((18, 6)).astype(np.float16)),
        (f'{prefix}video_test_0001292', 'test', [], 10.0, rng.random((15, 6)).astype(np.float32)),
        (f'{prefix}video_test_0000007', 'test', [], 10.0, rng.random((15, 6)).astype(np.float32)),
    ]


def test_wtalc_release_is_refused_without_trust_pickle(tmp_path, monkeypatch):
    features, annotations = write_wtalc(str(tmp_path), wtalc_videos(np.random.default_rng(0)))
    before = snapshot(str(tmp_path))
    proc = run_cli('prepare', 'thumos14', '--annotations', annotations, '--features', features,
                   '--out', str(tmp_path / 'out'), '--quiet')
    assert_one_line_error(proc, features, 'pickle', 'can run code', '--trust-pickle')
    assert not os.path.exists(tmp_path / 'out') and snapshot(str(tmp_path)) == before

    real_load = np.load
    def no_unpickling(*args, **kwargs):   # nothing is unpickled on the way to the refusal
        assert not kwargs.get('allow_pickle'), 'np.load(allow_pickle=True) without the flag'
        return real_load(*args, **kwargs)
    monkeypatch.setattr(np, 'load', no_unpickling)
    with pytest.raises(UserError, match='--trust-pickle'):
        prepare.prepare('thumos14', annotations=[annotations], features=features,
                        out=str(tmp_path / 'out'))


def test_wtalc_release_with_trust_pickle(tmp_path):
    videos = wtalc_videos(np.random.default_rng(0))
    features, annotations = write_wtalc(str(tmp_path), videos)
    out = str(tmp_path / 'out')
    proc = run_cli('prepare', 'thumos14', '--annotations', annotations, '--features', features,
                   '--out', out, '--trust-pickle')
    assert_ok(proc)
    with open(os.path.join(out, 'gt.json')) as f:
        written = json.load(f)['database']
    # 1292 is excluded as in the release; 0000007 has no annotations: in gt.json, not in a split.
    assert list(written) == [v[0] for v in videos if v[0] != 'video_test_0001292']
    assert written['video_validation_0000052'] == {
        'subset': 'train', 'duration': 30.0, 'annotations': [
            {'segment': [0.0, 2.5], 'label': 'Diving'},
            {'segment': [3.0, 30.0], 'label': 'CliffDiving'}]}
    assert read_lines(os.path.join(out, 'split_train.txt')) == [
        'video_validation_0000051', 'video_validation_0000052']
    assert read_lines(os.path.join(out, 'split_test.txt')) == ['video_test_0000004']
    assert table_row(proc.stdout, 'train') == (2, 2, 0, 0, 1)   # 30.0 > 40 * 16/25 = 25.6 s
    assert table_row(proc.stdout, 'test') == (2, 1, 0, 1, 0)
    for video, subset, _, _, array in videos[:3]:
        subset = 'train' if subset == 'validation' else subset
        for stream, half in (('rgb', array[:, :3]), ('flow', array[:, 3:])):
            written_half = np.load(os.path.join(out, 'features', subset, stream, video + '.npy'))
            assert written_half.dtype == np.float32
            np.testing.assert_array_equal(written_half, half.astype(np.float32))


def test_wtalc_activitynet_names_lose_their_v_prefix(tmp_path):
    rng = np.random.default_rng(1)
    videos = [('v_abcdefghijk', 'training', [(0.5, 9.0, 'Rock, paper, scissors')], 10.0,
               rng.random((12, 4)).astype(np.float32)),
              ('v_-bcdefghij_', 'validation', [(0.0, 4.0, 'Knitting')], 5.0,
               rng.random((8, 4)).astype(np.float32))]
    features, annotations = write_wtalc(str(tmp_path), videos, name='ActivityNet1.2')
    summary = prepare.prepare('activitynet', annotations=[annotations], features=features,
                              out=str(tmp_path / 'out'), trust_pickle=True)
    assert read_lines(str(tmp_path / 'out' / 'split_training.txt')) == ['abcdefghijk']
    assert read_lines(str(tmp_path / 'out' / 'split_validation.txt')) == ['-bcdefghij_']
    assert summary.split_joint == 2 and summary.stream_sizes == (2, 2)


def test_nothing_else_unpickles():
    """allow_pickle=True appears in prepare.py's W-TALC reader only (behind --trust-pickle);
    no module calls pickle's loaders, and torch.load runs with weights_only=True."""
    found, torch_loads = [], []
    for here, _, files in os.walk(os.path.join(REPO, 'wtal_jax')):
        for name in files:
            if name.endswith('.py'):
                with open(os.path.join(here, name)) as f:
                    text = f.read()
                for pattern in ('allow_pickle=True', 'pickle.load', 'Unpickler('):
                    found += [(name, pattern)] * text.count(pattern)
                torch_loads += re.findall(r'torch\.load\(([^)]*)\)', text)
    assert found == [('prepare.py', 'allow_pickle=True')] * 2
    assert torch_loads and all('weights_only=True' in args for args in torch_loads)


# ----------------------------------------------------------------------------------------------
# Feature folders: names, streams, prefixes


def write(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, array)


def test_index_finds_streams_by_folder_suffix_or_joint(tmp_path):
    ones = np.ones((3, 2), np.float32)
    for rel in ('train/rgb/a.npy', 'train/flow/a.npy', 'b_rgb.npy', 'b_flow.npy', 'x/v_c.npy',
                'RGB/d.npy', 'notes.txt'):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, ones) if rel.endswith('.npy') else path.write_text('x')
    index = prepare.index_features(str(tmp_path))
    assert sorted(index) == [('a', 'flow'), ('a', 'rgb'), ('b', 'flow'), ('b', 'rgb'),
                             ('d', 'rgb'), ('v_c', 'joint')]
    assert index['a', 'rgb'] == [str(tmp_path / 'train/rgb/a.npy')]


def tiny_release(folder, videos, *, subset='training'):
    """An ActivityNet-style JSON of ``videos`` {id: duration}, each with one 'Knitting' action."""
    database = {v: {'subset': subset, 'duration': d,
                    'annotations': [{'segment': [0.0, d / 2], 'label': 'Knitting'}]}
                for v, d in videos.items()}
    path = os.path.join(folder, 'anet.json')
    with open(path, 'w') as f:
        json.dump({'version': 'VERSION 1.3', 'database': database}, f)
    return path


def test_rgb_only_video_is_listed_as_missing_its_flow(tmp_path):
    ann = tiny_release(str(tmp_path), {'aaa': 10.0, 'bbb': 10.0})
    for stream in ('rgb', 'flow'):
        write(str(tmp_path / 'f' / stream / 'v_aaa.npy'), np.ones((5, 2), np.float32))
    write(str(tmp_path / 'f' / 'rgb' / 'v_bbb.npy'), np.ones((5, 2), np.float32))
    summary = prepare.prepare('activitynet', annotations=[ann], features=str(tmp_path / 'f'),
                              out=str(tmp_path / 'out'), subsets=['training'])
    assert summary.subsets == (prepare.SubsetCount('training', 2, 1, 1, 0, 0),)
    assert read_lines(str(tmp_path / 'out' / prepare.MISSING_FILE)) == ['bbb\ttraining\tno flow file']


# ----------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing in the sources or an earlier output changed


@pytest.fixture
def release(tmp_path):
    """A tiny valid release: three training and two validation videos, joint features."""
    ann = tiny_release(str(tmp_path), {'aaa': 10.0, 'bbb': 12.0, 'ccc': 8.0})
    with open(ann) as f:
        raw = json.load(f)
    raw['database']['ddd'] = dict(raw['database']['aaa'], subset='validation')
    raw['database']['eee'] = dict(raw['database']['bbb'], subset='validation')
    with open(ann, 'w') as f:
        json.dump(raw, f)
    for video in ('aaa', 'bbb', 'ccc', 'ddd', 'eee'):
        write(str(tmp_path / 'features' / f'v_{video}.npy'), np.ones((6, 4), np.float32))
    return ann, str(tmp_path / 'features')


def prepare_cli(ann, features, out, *extra):
    return run_cli('prepare', 'activitynet', '--annotations', ann, '--features', features,
                   '--out', out, '--quiet', *extra)


def test_out_is_refused_unless_empty_or_an_earlier_prepare_with_force(release, tmp_path):
    ann, features = release
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'thesis.tex').write_text('mine')
    assert_one_line_error(prepare_cli(ann, features, str(out)), str(out), 'not empty',
                          prepare.MARKER_FILE)
    assert_one_line_error(prepare_cli(ann, features, str(out), '--force'), 'not empty')
    assert (out / 'thesis.tex').read_text() == 'mine'

    out = str(tmp_path / 'prepared')
    assert_ok(prepare_cli(ann, features, out))
    first = snapshot(out)
    assert_one_line_error(prepare_cli(ann, features, out), out, '--force')
    assert snapshot(out) == first
    os.unlink(os.path.join(features, 'v_ccc.npy'))
    proc = prepare_cli(ann, features, out, '--force')
    assert_ok(proc)
    assert read_lines(os.path.join(out, 'split_training.txt')) == ['aaa', 'bbb']
    assert not [f for f in os.listdir(tmp_path) if f.startswith('.prepared')]  # no leftovers


def test_failure_midway_leaves_the_earlier_output(release, tmp_path):
    ann, features = release
    out = str(tmp_path / 'prepared')
    assert_ok(prepare_cli(ann, features, out))
    first = snapshot(out)
    broken = np.ones((6, 4), np.float32)
    broken[3, 1] = np.nan   # found only when the joint file is read to be split
    np.save(os.path.join(features, 'v_eee.npy'), broken)
    assert_one_line_error(prepare_cli(ann, features, out, '--force'), 'v_eee.npy',
                          'NaN or Inf at segment 3')
    assert snapshot(out) == first
    assert not [f for f in os.listdir(tmp_path) if f.startswith('.prepared')]


@pytest.mark.parametrize('case,words', [
    ('out inside features', ['overlaps the source']),
    ('features inside out', ['overlaps the source']),
    ('unsafe id', ["'../aaa'", 'not a plain file name']),
    ('missing annotations', ['nope.json', 'not found']),
    ('empty feature folder', ['no .npy feature files']),
    ('nothing matches', ["subset 'training'", 'aaa.npy or v_aaa.npy']),
    ('odd joint width', ['v_bbb.npy', '5 values per segment', 'even']),
    ('streams differ', ['video aaa', 'has 6', 'has 7']),
    ('joint and separate', ['video aaa', 'keep one form']),
    ('duplicate file', ['video aaa', '2 joint feature files']),
    ('forged header', ['v_ccc.npy', 'not a readable .npy', 'TiB']),
    ('pickled feature file', ['v_ccc.npy', 'object array']),
    ('unknown subset', ["'train'", 'training, validation']),
    ('subset without annotations', ["'testing'", 'no annotations']),
    ('sizes differ', ['video bbb', '3 + 3', 'video aaa has 2 + 2']),
    ('annotations are a FIFO', ['anet.json', 'is a named pipe (FIFO); expected a file or a '
                                'folder']),
    ('feature file is a link loop', ['v_ccc.npy: is a symbolic link loop, expected a .npy']),
    ('float64 beyond float32', ['v_ccc.npy: value 1e+300 at segment 2 of 6 is beyond float32']),
])
def test_bad_input_is_one_line(release, tmp_path, case, words):
    ann, features = release
    out, extra = str(tmp_path / 'out'), []
    f = lambda name: os.path.join(features, name)   # noqa: E731
    if case == 'out inside features':
        out = os.path.join(features, 'prepared')
    elif case == 'features inside out':
        out = os.path.dirname(features)
    elif case == 'unsafe id':
        with open(ann) as fh:
            raw = json.load(fh)
        raw['database']['../aaa'] = raw['database']['aaa']
        with open(ann, 'w') as fh:
            json.dump(raw, fh)
    elif case == 'missing annotations':
        ann = str(tmp_path / 'nope.json')
    elif case == 'empty feature folder':
        features = str(tmp_path / 'empty')
        os.makedirs(features)
    elif case == 'nothing matches':
        for name in os.listdir(features):
            os.rename(f(name), f('x' + name))
    elif case == 'odd joint width':
        np.save(f('v_bbb.npy'), np.ones((6, 5), np.float32))
    elif case == 'streams differ':
        os.unlink(f('v_aaa.npy'))
        write(f('rgb/v_aaa.npy'), np.ones((6, 2), np.float32))
        write(f('flow/v_aaa.npy'), np.ones((7, 2), np.float32))
    elif case == 'joint and separate':
        write(f('rgb/v_aaa.npy'), np.ones((6, 2), np.float32))
    elif case == 'duplicate file':
        write(f('more/v_aaa.npy'), np.ones((6, 4), np.float32))
    elif case == 'forged header':
        with open(f('v_ccc.npy'), 'wb') as fh:
            np.lib.format.write_array_header_1_0(
                fh, {'descr': '<f4', 'fortran_order': False, 'shape': (2 ** 40, 2 ** 4)})
    elif case == 'pickled feature file':
        np.save(f('v_ccc.npy'), np.array([1, None], object), allow_pickle=True)
    elif case == 'unknown subset':
        extra = ['--subsets', 'train']
    elif case == 'subset without annotations':
        with open(ann) as fh:
            raw = json.load(fh)
        raw['database']['zzz'] = {'subset': 'testing', 'duration': 3.0, 'annotations': []}
        with open(ann, 'w') as fh:
            json.dump(raw, fh)
        extra = ['--subsets', 'testing']
    elif case == 'sizes differ':
        np.save(f('v_bbb.npy'), np.ones((6, 6), np.float32))
    elif case == 'annotations are a FIFO':
        os.unlink(ann)
        os.mkfifo(ann)
    elif case == 'feature file is a link loop':
        os.unlink(f('v_ccc.npy'))
        os.symlink(f('v_ccc.npy'), f('v_ccc.npy'))
    elif case == 'float64 beyond float32':   # a joint file: read whole to be split
        values = np.ones((6, 4))
        values[2, 3] = 1e300
        np.save(f('v_ccc.npy'), values)
    before = snapshot(os.path.dirname(features))
    out_before = snapshot(out) if os.path.isdir(out) else None
    assert_one_line_error(prepare_cli(ann, features, out, *extra), *words)
    assert snapshot(os.path.dirname(features)) == before
    assert (snapshot(out) if os.path.isdir(out) else None) == out_before


# ----------------------------------------------------------------------------------------------
# Annotations outside their video


def test_negative_starts_are_said_apart_from_ends_after_the_video(tmp_path):
    ann = tiny_release(str(tmp_path), {'aaa': 10.0, 'bbb': 12.0, 'ccc': 8.0})
    with open(ann) as f:
        raw = json.load(f)
    raw['database']['aaa']['annotations'] = [   # one before 0 s, one after the 10 s end
        {'segment': [-1.5, 4.0], 'label': 'Knitting'},
        {'segment': [5.0, 11.0], 'label': 'Knitting'}]
    raw['database']['bbb']['annotations'] = [{'segment': [-0.5, 13.0], 'label': 'Knitting'}]  # both
    with open(ann, 'w') as f:
        json.dump(raw, f)
    for video in ('aaa', 'bbb', 'ccc'):
        write(str(tmp_path / 'features' / f'v_{video}.npy'), np.ones((6, 4), np.float32))
    proc = prepare_cli(ann, str(tmp_path / 'features'), str(tmp_path / 'out'),
                       '--subsets', 'training')
    assert_ok(proc)
    database = raw['database']
    ends_after = sum(a['segment'][1] > e['duration'] for e in database.values()
                     for a in e['annotations'])
    starts_before = sum(a['segment'][0] < 0 for e in database.values() for a in e['annotations'])
    assert (ends_after, starts_before) == (2, 2)
    assert table_row(proc.stdout, 'training') == (3, 3, 0, 0, ends_after)
    assert (f'start before 0 s: {starts_before} of training annotations (negative times, a '
            'mistake in the annotation file); training clips them at 0') in proc.stdout
    # The written annotations are the file's, negative times included (evaluation uses them).
    with open(tmp_path / 'out' / 'gt.json') as f:
        assert json.load(f)['database']['aaa']['annotations'][0]['segment'] == [-1.5, 4.0]


# ----------------------------------------------------------------------------------------------
# The output folder: whole or not at all, one run at a time, leftovers of interrupted runs


def large_release(folder, count=1500):
    """``count`` training videos with joint features: each is split and written, so a run takes
    a second or two (long enough to meet another run, or to be killed midway)."""
    ann = tiny_release(str(folder), {f'vid{i:05d}': 10.0 for i in range(count)})
    with open(ann) as f:
        raw = json.load(f)
    for video in list(raw['database'])[:count // 3]:
        raw['database'][video]['subset'] = 'validation'
    with open(ann, 'w') as f:
        json.dump(raw, f)
    for video in raw['database']:
        write(str(folder / 'features' / f'v_{video}.npy'), np.ones((6, 4), np.float32))
    return ann, str(folder / 'features')


def leftovers(out):
    """Entries beside OUT that a prepare into OUT made: hidden builds, asides, its lock."""
    parent, name = os.path.split(out)
    return sorted(f for f in os.listdir(parent) if f.startswith(f'.{name}.prepare'))


def prepare_popen(ann, features, out, *extra):
    return subprocess.Popen([sys.executable, '-m', 'wtal_jax', 'prepare', 'activitynet',
                             '--annotations', ann, '--features', features, '--out', out,
                             '--quiet', *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, JAX_PLATFORMS='cpu'))


def finished(proc):
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_two_prepares_into_one_new_folder_at_once_one_is_refused(tmp_path):
    """Both used to succeed, the later silently replacing the earlier's output."""
    ann, features = large_release(tmp_path)
    out = str(tmp_path / 'prepared')
    # Different subsets, so that the output shows which run wrote it, and that only one did.
    both = [prepare_popen(ann, features, out), prepare_popen(ann, features, out,
                                                             '--subsets', 'training')]
    procs = [finished(p) for p in both]
    assert sorted(p.returncode for p in procs) == [0, 2], [p.stderr for p in procs]
    winner = next(i for i, p in enumerate(procs) if p.returncode == 0)
    loser = procs[1 - winner]
    line = assert_one_line_error(loser, out)
    assert ('another prepare is writing it' in line or 'holds an earlier prepare; pass --force'
            in line), line
    subsets = ['training', 'validation'] if winner == 0 else ['training']
    with open(ann) as f:
        database = json.load(f)['database']
    expected = {s: [v for v, e in database.items() if e['subset'] == s] for s in subsets}
    assert sorted(os.listdir(out)) == sorted(['gt.json', 'features', prepare.MISSING_FILE,
                                              prepare.MARKER_FILE] +
                                             [f'split_{s}.txt' for s in subsets])
    assert sorted(os.listdir(os.path.join(out, 'features'))) == subsets
    for subset, videos in expected.items():
        assert read_lines(os.path.join(out, f'split_{subset}.txt')) == videos
        for stream in ('rgb', 'flow'):
            assert sorted(os.listdir(os.path.join(out, 'features', subset, stream))) == \
                sorted(v + '.npy' for v in videos)
    with open(os.path.join(out, prepare.MARKER_FILE)) as f:
        assert json.load(f)['subsets'] == subsets
    assert leftovers(out) == []


def test_a_prepare_killed_midway_is_cleaned_up_by_the_next_and_said(tmp_path):
    """An interrupted run's hidden folder used to stay, unmentioned, for ever."""
    ann, features = large_release(tmp_path)
    out = str(tmp_path / 'prepared')
    proc = prepare_popen(ann, features, out)
    written, deadline = None, time.monotonic() + 120
    while written is None and proc.poll() is None and time.monotonic() < deadline:
        for entry in leftovers(out):   # its build folder, once features are being written
            folder = os.path.join(str(tmp_path), entry, 'features', 'training', 'rgb')
            if re.fullmatch(r'\.prepared\.prepare-[0-9a-f]{8}', entry) and \
                    os.path.isdir(folder) and len(os.listdir(folder)) >= 10:
                written = entry
        time.sleep(0.002)
    proc.kill()   # SIGKILL: nothing of the run's own cleanup runs
    proc.communicate()
    assert written is not None, 'the run ended before it was seen writing'
    assert not os.path.exists(out)
    assert written in leftovers(out)

    proc = prepare_cli(ann, features, out)
    assert_ok(proc)
    assert (f'note: removed {os.path.join(str(tmp_path), written)}, the unfinished output of an '
            'interrupted prepare') in proc.stderr.splitlines()
    assert leftovers(out) == []
    assert len(read_lines(os.path.join(out, 'split_training.txt'))) == 1000
    assert len(os.listdir(os.path.join(out, 'features', 'validation', 'flow'))) == 500


def _as_force_left_it(out, token='0123abcd'):
    """What a prepare --force stopped between its two renames leaves: the earlier output moved
    aside to .NAME.prepare-TOKEN.old, its own finished build in .NAME.prepare-TOKEN, no OUT."""
    parent, name = os.path.split(out)
    built = os.path.join(parent, f'.{name}.prepare-{token}')
    shutil.copytree(out, built, symlinks=True)
    os.rename(out, built + '.old')
    return built


def test_an_earlier_output_left_aside_by_an_interrupted_force_is_restored(release, tmp_path):
    ann, features = release
    out = str(tmp_path / 'prepared')
    assert_ok(prepare_cli(ann, features, out))
    first = snapshot(out)
    built = _as_force_left_it(out)
    assert not os.path.exists(out)   # neither output at OUT: the earlier one waits aside

    proc = prepare_cli(ann, features, out)   # without --force: restored, then refused
    *notes, error = proc.stderr.strip().splitlines()
    assert notes == [f'note: removed {built}, the unfinished output of an interrupted prepare',
                     f'note: restored {out} from {built}.old, where an interrupted prepare '
                     '--force had moved it']
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert error == (f'wtal-jax prepare: error: {out}: holds an earlier prepare; pass --force to '
                     'replace it')
    assert snapshot(out) == first
    assert leftovers(out) == []

    os.unlink(os.path.join(features, 'v_ccc.npy'))
    assert_ok(prepare_cli(ann, features, out, '--force'))
    assert read_lines(os.path.join(out, 'split_training.txt')) == ['aaa', 'bbb']


def test_an_earlier_output_left_after_the_new_one_is_in_is_removed(release, tmp_path):
    """Stopped after its second rename, --force leaves the replaced output aside: removed."""
    ann, features = release
    out = str(tmp_path / 'prepared')
    assert_ok(prepare_cli(ann, features, out))
    built = _as_force_left_it(out)
    os.rename(built, out)   # the new output went in; the old one was still to be removed
    second = snapshot(out)
    proc = prepare_cli(ann, features, out)
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == (f'note: removed {built}.old, the earlier output that an interrupted '
                        'prepare --force had replaced')
    assert lines[1:] == [f'wtal-jax prepare: error: {out}: holds an earlier prepare; pass '
                         '--force to replace it'] and proc.returncode == 2
    assert snapshot(out) == second and leftovers(out) == []


def test_force_that_fails_between_its_renames_puts_the_earlier_output_back(release, tmp_path,
                                                                           monkeypatch, capsys):
    """The second rename refused (here by a stand-in for the system): OUT is the earlier
    output again at once, and nothing is left beside it."""
    from wtal_jax import cli
    ann, features = release
    out = str(tmp_path / 'prepared')
    assert cli.main(['prepare', 'activitynet', '--annotations', ann, '--features', features,
                     '--out', out, '--quiet']) == 0
    first = snapshot(out)
    rename = os.rename

    def refuse_the_new_output(src, dst):
        if dst == out and not src.endswith('.old') and os.path.exists(src + '.old'):
            raise OSError(errno.EIO, 'Input/output error', src, None, dst)
        rename(src, dst)

    monkeypatch.setattr(os, 'rename', refuse_the_new_output)
    os.unlink(os.path.join(features, 'v_ccc.npy'))
    capsys.readouterr()
    assert cli.main(['prepare', 'activitynet', '--annotations', ann, '--features', features,
                     '--out', out, '--quiet', '--force']) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('wtal-jax prepare: error: ') and \
        'Input/output error' in err[0], err
    assert snapshot(out) == first and leftovers(out) == []


def test_a_new_output_never_replaces_what_appeared_meanwhile(release, tmp_path, monkeypatch):
    """Without --force, the rename onto OUT is the check: a folder filled by another program
    after the first check is refused, not moved aside and deleted."""
    ann, features = release
    out = tmp_path / 'prepared'
    real_replace = prepare._replace

    def someone_writes_first(out_path, built, *rest):
        os.makedirs(out_path, exist_ok=True)
        with open(os.path.join(out_path, 'thesis.tex'), 'w') as f:
            f.write('mine')
        real_replace(out_path, built, *rest)

    monkeypatch.setattr(prepare, '_replace', someone_writes_first)
    with pytest.raises(UserError, match='folder is not empty and was not written by prepare'):
        prepare.prepare('activitynet', annotations=[ann], features=features, out=str(out))
    assert os.listdir(out) == ['thesis.tex'] and (out / 'thesis.tex').read_text() == 'mine'
    assert leftovers(str(out)) == []


def test_a_feature_file_larger_than_the_memory_is_one_line(release, tmp_path):
    """A sparse joint file as large as its header says, twice the machine's memory: np.load was
    a MemoryError traceback (or, where the system overcommits, a process killed halfway)."""
    ann, features = release
    with open('/proc/meminfo') as f:
        total = next(int(line.split()[1]) * 1024 for line in f if line.startswith('MemTotal:'))
    rows = 2 * total // (4 * 4) + 1   # (rows, 4) float32: over twice MemTotal
    path = os.path.join(features, 'v_ccc.npy')
    with open(path, 'wb') as f:
        np.lib.format.write_array_header_1_0(f, {'descr': '<f4', 'fortran_order': False,
                                                 'shape': (rows, 4)})
        f.truncate(f.tell() + rows * 16)   # holes: no disk space taken
    out = tmp_path / 'out'
    out.mkdir()
    line = assert_one_line_error(prepare_cli(ann, features, str(out)), path,
                                 f'the header declares ({rows}, 4) float32; loading it needs '
                                 'about', 'of memory available')
    assert os.listdir(out) == [] and leftovers(str(out)) == []
    assert 'GiB' in line
