"""End to end through ``python -m wtal_jax``: train, evaluate, detect, map; bad input gives one
line on stderr and exit status 2, never a traceback, and leaves earlier results intact."""

import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from wtal_jax import cli
from wtal_jax.data import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTHETIC_CONFIG = os.path.join(REPO, 'configs', 'synthetic.py')
DATA = dict(num_classes=3, num_train=20, num_test=8, feature_dim=8, min_segments=20,
            max_segments=60, seed=0)
TINY = [f'--config.synthetic.{k}={v}' for k, v in DATA.items()] + [
    '--config.data.feature_dim=16', '--config.data.num_segments=32',
    '--config.model.embed_dim=32', '--config.train.batch_size=8',
    '--config.train.log_every_steps=1', '--config.eval.chunk_segments=256',
    '--config.optim.learning_rate=1e-3']
RESULT_KEYS = {'tiou_thresholds', 'mAP', 'average_mAP', 'ap'}


def command(*args):
    return [sys.executable, '-m', 'wtal_jax', *args]


def cli_env():
    return dict(os.environ, JAX_PLATFORMS='cpu', PYTHONWARNINGS='default')


def run_cli(*args, cwd):
    return subprocess.run(command(*args), capture_output=True, text=True, cwd=cwd,
                          env=cli_env(), timeout=300)


def assert_ok(proc):
    assert proc.returncode == 0, f'stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}'
    assert 'Traceback' not in proc.stderr


def assert_one_line_error(proc, command_name, *words, status=2):
    assert proc.returncode == status, f'rc {proc.returncode}\n{proc.stdout}\n{proc.stderr}'
    assert 'Traceback' not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f'wtal-jax {command_name}: error: '), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])


def video_names(root, split):
    with open(os.path.join(root, f'split_{split}.txt')) as f:
        return [line.strip() for line in f if line.strip()]


# ---------------------------------------------------------------------------------------------
# The parser: one place, every option explained


def subcommands() -> dict:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_subcommand_is_built_by_the_cli():
    assert set(subcommands()) == {'train', 'evaluate', 'map', 'detect', 'bench', 'convert-torch',
                                  'export-torch', 'plot', 'ablate', 'prepare', 'compare',
                                  'sweep', 'show'}


@pytest.mark.parametrize('name', sorted(subcommands()))
def test_help_gives_every_option_a_text_and_its_default(name):
    parser = subcommands()[name]
    shown = ' '.join(parser.format_help().split())  # as printed, without the line breaks
    in_required_group = {id(a) for g in parser._mutually_exclusive_groups if g.required
                         for a in g._group_actions}
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        what = f'{name} {"/".join(action.option_strings) or action.dest}'
        assert action.help and len(action.help) > 10, f'{what} has no help text'
        if not action.option_strings or action.required or id(action) in in_required_group:
            continue  # given every time: no default to state
        if action.default is False:
            assert action.nargs == 0, f'{what}: a flag'  # store_true: off unless given
        elif action.default is None:
            assert '(default: ' in action.help, f'{what} does not say what happens without it'
        else:
            assert f'(default: {action.default})' in shown, f'{what} hides its default'


def test_library_modules_are_importable_without_argparse_and_parse_nothing():
    """The tools expose functions; the command line lives in cli.py alone."""
    tools = ('bench', 'torch_convert', 'plotting', 'ablation')
    code = ('import sys; import ' + ', '.join(f'wtal_jax.tools.{m}' for m in tools) +
            '; print("argparse" in sys.modules)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == 'False', out.stderr
    for name in tools:
        path = os.path.join(REPO, 'wtal_jax', 'tools', name + '.py')
        with open(path) as f:
            source = f.read()
        for word in ('argparse', 'SystemExit', 'add_parser', 'sys.exit'):
            assert word not in source, (name, word)


def test_building_the_parser_imports_no_framework_or_extra():
    code = ('import sys; from wtal_jax import cli; cli.build_parser(); print(sorted(m for m in '
            'sys.modules if m.split(".")[0] in ("jax", "flax", "orbax", "torch", '
            '"matplotlib")))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == '[]', out.stderr


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('cli') / 'data')
    synthetic.generate(root, **DATA)
    with open(os.path.join(root, 'gt.json')) as f:
        database = json.load(f)['database']
    test_labels = {a['label'] for v in database.values() if v['subset'] == 'test'
                   for a in v['annotations']}
    # `map` on our own results needs every class in the test ground truth (as the official
    # evaluation does); this data set has them.
    assert len(test_labels) == DATA['num_classes'], test_labels
    return root


@pytest.fixture(scope='module')
def trained(data_root, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp('cli') / 'run')
    proc = run_cli('train', '--config', SYNTHETIC_CONFIG, '--workdir', workdir, '--quiet',
                   *TINY, f'--config.data.root={data_root}', '--config.train.num_steps=4',
                   '--config.eval.every_steps=2', '--config.checkpoint.every_steps=2',
                   cwd=os.path.dirname(workdir))
    return workdir, proc


def test_train(trained):
    workdir, proc = trained
    assert_ok(proc)
    assert 'test split, 1 seed (0), 4 steps' in proc.stdout
    assert 'tIoU 0.1' in proc.stdout and 'AVG' in proc.stdout
    assert os.path.isfile(os.path.join(workdir, 'report.json'))
    assert os.path.isfile(os.path.join(workdir, 'config.json'))
    assert os.path.isdir(os.path.join(workdir, 'checkpoints', '4'))
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
        rows = [json.loads(line) for line in f]
    assert [r['step'] for r in rows if r['split'] == 'train'] == [1, 2, 3, 4]
    assert [r['step'] for r in rows if r['split'] == 'test'] == [2, 4]
    assert [r['step'] for r in rows if r['split'] == 'selection'] == [2, 4]


@pytest.fixture(scope='module')
def evaluated(trained):
    workdir, _ = trained
    return workdir, run_cli('evaluate', '--workdir', workdir, '--quiet', cwd=workdir)


def test_evaluate_writes_results_and_metrics(data_root, evaluated):
    workdir, proc = evaluated
    assert_ok(proc)
    assert 'mAP@tIoU' in proc.stdout and 'checkpoint step' in proc.stdout
    assert 'average over' in proc.stdout and 'video accuracy' in proc.stdout
    with open(os.path.join(workdir, 'results_test.json')) as f:
        results = json.load(f)
    assert set(results['results']) == set(video_names(data_root, 'test'))
    detections = [d for dets in results['results'].values() for d in dets]
    assert detections
    for d in detections:
        assert set(d) == {'label', 'score', 'segment'}
        assert d['label'] in {f'Class{c:02d}' for c in range(DATA['num_classes'])}
        assert len(d['segment']) == 2 and d['segment'][0] <= d['segment'][1]
    with open(os.path.join(workdir, 'metrics_test.json')) as f:
        metrics = json.load(f)
    assert RESULT_KEYS | {'step', 'split', 'video_accuracy', 'classification_mAP', 'averages',
                          'videos'} <= set(metrics)
    np.testing.assert_allclose(metrics['tiou_thresholds'], np.arange(1, 8) / 10)
    assert metrics['average_mAP'] == pytest.approx(np.mean(metrics['mAP']))
    assert metrics['averages']['0.1:0.7'] == pytest.approx(metrics['average_mAP'], abs=1e-12)
    assert set(metrics['videos']) == set(video_names(data_root, 'test'))
    # The checkpoint chosen on the selection split, and the same figures as training logged
    # there on the test split.
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
        rows = [json.loads(line) for line in f]
    selection = [r for r in rows if r['split'] == 'selection']
    best = max(selection, key=lambda r: (r['average_mAP'], -r['step']))   # ties: the earliest
    assert metrics['step'] == best['step']
    logged = next(r for r in rows if r['split'] == 'test' and r['step'] == best['step'])
    assert metrics['average_mAP'] == pytest.approx(logged['average_mAP'], abs=1e-9)
    assert metrics['averages'] == pytest.approx(logged['averages'], abs=1e-9)


def test_best_metric_choices_are_the_scalars_an_evaluation_records(evaluated):
    """checkpoint.best_metric may name exactly the scalar metrics a training run records."""
    from wtal_jax import config
    workdir, _ = evaluated
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
        evals = [json.loads(line) for line in f if '"selection"' in line]
    for metrics in evals:
        assert {k for k, v in metrics.items() if isinstance(v, float)} == set(config.EVAL_METRICS)


def test_map_on_the_written_results(data_root, evaluated, tmp_path):
    workdir, _ = evaluated
    out = tmp_path / 'map.json'
    proc = run_cli('map', '--ground-truth', os.path.join(data_root, 'gt.json'),
                   '--predictions', os.path.join(workdir, 'results_test.json'),
                   '--json', str(out), cwd=str(tmp_path))
    assert_ok(proc)
    assert 'mAP@tIoU' in proc.stdout
    with open(out) as f:
        figures = json.load(f)
    assert set(figures) == RESULT_KEYS
    assert set(figures['ap']) == {f'Class{c:02d}' for c in range(DATA['num_classes'])}
    with open(os.path.join(workdir, 'metrics_test.json')) as f:
        metrics = json.load(f)
    np.testing.assert_allclose(figures['mAP'], metrics['mAP'], atol=1e-12)
    assert figures['average_mAP'] == pytest.approx(metrics['average_mAP'], abs=1e-12)


def test_detect_matches_evaluation_detections(data_root, evaluated, tmp_path):
    workdir, _ = evaluated
    names = video_names(data_root, 'test')[:3]
    specs = [','.join(os.path.join(data_root, 'features', 'test', s, n + '.npy')
                      for s in ('rgb', 'flow')) for n in names]
    out = tmp_path / 'detections.json'
    proc = run_cli('detect', '--checkpoint', workdir, '--output', str(out), *specs,
                   cwd=str(tmp_path))
    assert_ok(proc)
    assert 'detections for 3 videos' in proc.stdout
    with open(out) as f:
        detected = json.load(f)['results']
    with open(os.path.join(workdir, 'results_test.json')) as f:
        evaluated_results = json.load(f)['results']
    assert list(detected) == names
    for name in names:       # same checkpoint (best), same features: same detections
        a, b = detected[name], evaluated_results[name]
        assert [d['label'] for d in a] == [d['label'] for d in b]
        np.testing.assert_allclose([d['score'] for d in a], [d['score'] for d in b], rtol=1e-5)
        np.testing.assert_allclose([d['segment'] for d in a], [d['segment'] for d in b],
                                   rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit status 2


def _first_train(root):
    return video_names(root, 'train')[0]


def _feature(root, stream, video, split='train'):
    return os.path.join(root, 'features', split, stream, video + '.npy')


def _missing_feature(root):
    os.unlink(_feature(root, 'rgb', _first_train(root)))


def _length_mismatch(root):
    path = _feature(root, 'flow', _first_train(root))
    np.save(path, np.load(path)[:-1])


def _wrong_size(root):
    path = _feature(root, 'rgb', _first_train(root))
    np.save(path, np.load(path)[:, :-1])


def _nan_features(root, split='train'):
    video = video_names(root, split)[0]
    path = _feature(root, 'rgb', video, split)
    array = np.load(path)
    array[3, 2] = np.nan
    np.save(path, array)


def _bogus_label(root):
    path = os.path.join(root, 'gt.json')
    with open(path) as f:
        gt = json.load(f)
    gt['database'][_first_train(root)]['annotations'][0]['label'] = 'Bogus'
    with open(path, 'w') as f:
        json.dump(gt, f)


def _empty_split(root):
    open(os.path.join(root, 'split_train.txt'), 'w').close()


# name -> (how to break a copy of the data set, extra arguments, words the message names)
BAD_TRAIN_INPUTS = {
    'missing_feature_file': (_missing_feature, [], ['1 of 20 videos have no feature files',
                                                    'data.missing=skip']),
    'rgb_flow_length_mismatch': (_length_mismatch, [], ['streams differ in length']),
    'wrong_feature_size': (_wrong_size, [], ['15 values per segment', 'feature_dim 16']),
    'nan_in_features': (_nan_features, [], ['NaN or Inf at segment 3']),
    'label_outside_class_list': (
        _bogus_label, ['--config.data.class_names=Class00,Class01,Class02'], ["'Bogus'"]),
    'empty_split_file': (_empty_split, [], ['split_train.txt', 'lists no videos']),
    'missing_config_file': (None, ['--config=MISSING'], ['no_such_config.py', 'not found']),
    'unknown_override_key': (None, ['--config.train.num_stepz=3'],
                             ['train.num_stepz', 'no such field']),
    'no_workdir': (None, ['NO_WORKDIR'], ['--workdir']),
}


@pytest.fixture(scope='module')
def bad_train_runs(data_root, tmp_path_factory):
    """Every bad-input case, each on its own broken copy, all started at once (they are slow
    to start and quick to fail)."""
    base = tmp_path_factory.mktemp('bad')
    procs = {}
    for name, (breaker, extra, _) in BAD_TRAIN_INPUTS.items():
        folder = base / name
        root = str(folder / 'data')
        shutil.copytree(data_root, root)
        if breaker is not None:
            breaker(root)
        config_file = SYNTHETIC_CONFIG
        workdir = ['--workdir', str(folder / 'run')]
        args = []
        for item in extra:
            if item == '--config=MISSING':
                config_file = str(folder / 'no_such_config.py')
            elif item == 'NO_WORKDIR':
                workdir = []
            else:
                args.append(item)
        argv = command('train', '--config', config_file, *workdir,
                       '--quiet', *TINY, f'--config.data.root={root}',
                       '--config.synthetic.enabled=false', '--config.train.num_steps=1',
                       *args)
        procs[name] = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, cwd=str(folder), env=cli_env())
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return results


@pytest.mark.parametrize('case', sorted(BAD_TRAIN_INPUTS))
def test_bad_train_input_is_one_line_exit_2(bad_train_runs, case):
    assert_one_line_error(bad_train_runs[case], 'train', *BAD_TRAIN_INPUTS[case][2])


def test_bad_input_is_found_before_any_results_are_written(data_root, evaluated, tmp_path):
    workdir, proc = evaluated
    assert_ok(proc)
    results_path = os.path.join(workdir, 'results_test.json')
    metrics_path = os.path.join(workdir, 'metrics_test.json')
    with open(results_path, 'rb') as f:
        results_before = f.read()
    with open(metrics_path, 'rb') as f:
        metrics_before = f.read()
    # The same evaluation on a copy of the data whose first test video has a NaN: it fails.
    broken = str(tmp_path / 'data')
    shutil.copytree(data_root, broken)
    _nan_features(broken, 'test')
    proc = run_cli('evaluate', '--workdir', workdir, '--quiet', f'--config.data.root={broken}',
                   cwd=str(tmp_path))
    assert_one_line_error(proc, 'evaluate', 'NaN or Inf')
    with open(results_path, 'rb') as f:
        assert f.read() == results_before
    with open(metrics_path, 'rb') as f:
        assert f.read() == metrics_before
    # detect over an existing output file, with one feature file missing: the file stays.
    out = tmp_path / 'detections.json'
    out.write_text('{"previous": true}')
    proc = run_cli('detect', '--checkpoint', workdir, '--output', str(out), '--force',
                   _feature(data_root, 'rgb', video_names(data_root, 'test')[0], 'test') + ','
                   + str(tmp_path / 'missing_flow.npy'), cwd=str(tmp_path))
    assert_one_line_error(proc, 'detect', 'missing_flow.npy')
    assert json.loads(out.read_text()) == {'previous': True}


# The kernel refuses writes past the first LIMIT bytes of any file (EFBIG; SIGXFSZ ignored so
# that the process is not killed): a write cut off midway, as on a full disk.
LIMITED = ('import resource, runpy, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); '
           'limit = int(sys.argv.pop(1)); resource.setrlimit(resource.RLIMIT_FSIZE, (limit, '
           'limit)); runpy.run_module("wtal_jax", run_name="__main__")')


def run_cli_limited(limit, *args, cwd):
    return subprocess.run([sys.executable, '-c', LIMITED, str(limit), *args],
                          capture_output=True, text=True, cwd=cwd, env=cli_env(), timeout=300)


def test_results_writes_cut_off_midway_keep_the_previous_files(data_root, evaluated, tmp_path):
    workdir, proc = evaluated
    assert_ok(proc)
    results_path = os.path.join(workdir, 'results_test.json')
    files = {name: open(os.path.join(workdir, name), 'rb').read()
             for name in ('results_test.json', 'metrics_test.json')}
    listing = sorted(os.listdir(workdir))
    assert len(files['results_test.json']) > 1000
    proc = run_cli_limited(1000, 'evaluate', '--workdir', workdir, '--quiet', cwd=str(tmp_path))
    assert_one_line_error(proc, 'evaluate', results_path, 'File too large', 'unchanged',
                          status=1)
    with open(results_path, 'rb') as f:
        assert f.read() == files['results_test.json']
    # The two files are one set: the metrics are removed before the results are replaced, so
    # that they never describe another results file; the interrupted evaluate leaves the
    # previous results without them.
    assert not os.path.exists(os.path.join(workdir, 'metrics_test.json'))
    assert sorted(os.listdir(workdir)) == [name for name in listing
                                           if name != 'metrics_test.json']  # no temporary file

    names = video_names(data_root, 'test')[:3]
    specs = [','.join(_feature(data_root, s, n, 'test') for s in ('rgb', 'flow')) for n in names]
    out = tmp_path / 'detections.json'
    out.write_text('{"previous": true}')
    proc = run_cli_limited(300, 'detect', '--checkpoint', workdir, '--output', str(out),
                           '--force', *specs, cwd=str(tmp_path))
    assert_one_line_error(proc, 'detect', str(out), 'File too large', status=1)
    assert json.loads(out.read_text()) == {'previous': True}
    assert os.listdir(tmp_path) == ['detections.json']


def test_detect_refuses_to_replace_an_output_without_force(data_root, evaluated, tmp_path):
    workdir, _ = evaluated
    name = video_names(data_root, 'test')[0]
    spec = ','.join(_feature(data_root, s, name, 'test') for s in ('rgb', 'flow'))
    out = tmp_path / 'detections.json'
    out.write_text('{"previous": true}')
    proc = run_cli('detect', '--checkpoint', workdir, '--output', str(out), spec,
                   cwd=str(tmp_path))
    assert_one_line_error(proc, 'detect', str(out), 'exists', '--force')
    assert json.loads(out.read_text()) == {'previous': True}
    for output, words in ((tmp_path, ['is a folder']),
                          (tmp_path / 'missing' / 'd.json', ['does not exist'])):
        proc = run_cli('detect', '--checkpoint', workdir, '--output', str(output), '--force',
                       spec, cwd=str(tmp_path))
        assert_one_line_error(proc, 'detect', str(output), *words)
    assert os.listdir(tmp_path) == ['detections.json']
    proc = run_cli('detect', '--checkpoint', workdir, '--output', str(out), '--force', spec,
                   cwd=str(tmp_path))
    assert_ok(proc)
    assert list(json.loads(out.read_text())['results']) == [name]


# ---------------------------------------------------------------------------------------------
# As a new user reads it: lines that fit, words that count, nothing left behind


def test_a_failed_train_leaves_no_empty_run_folder(bad_train_runs):
    for name, proc in bad_train_runs.items():
        if '--workdir' in proc.args:
            workdir = proc.args[proc.args.index('--workdir') + 1]
            assert proc.returncode == 2 and not os.path.exists(workdir), (name, workdir)
            assert os.path.isdir(os.path.dirname(workdir))   # the folder above it is kept


def test_train_notes_and_evaluate_text_fit_80_columns(trained, evaluated):
    _, train_proc = trained
    workdir, proc = evaluated
    lines = train_proc.stderr.splitlines() + proc.stdout.splitlines()
    assert any(line.startswith('training data: ') for line in lines)
    assert all(len(line) <= 80 for line in lines if workdir not in line), \
        max(lines, key=len)
    assert '--json' not in proc.stdout
    assert f'the evaluated videos: "videos" in {workdir}/metrics_test.json' in proc.stdout


def test_detect_counts_one_video_in_the_singular(data_root, evaluated, tmp_path):
    workdir, _ = evaluated
    name = video_names(data_root, 'test')[0]
    spec = ','.join(os.path.join(data_root, 'features', 'test', s, name + '.npy')
                    for s in ('rgb', 'flow'))
    proc = run_cli('detect', '--checkpoint', workdir, '--output', str(tmp_path / 'd.json'), spec,
                   cwd=str(tmp_path))
    assert_ok(proc)
    assert proc.stdout.rstrip().endswith(f'for 1 video to {tmp_path / "d.json"}'), proc.stdout


def test_the_progress_line_shows_the_selection_split_labelled_sel():
    from wtal_jax.runs import checkpoints, loop
    scalars = {checkpoints.metric_key('selection', 'average_mAP'): [0.5, 0.7],
               checkpoints.metric_key('test', 'average_mAP'): [0.9, 0.9]}
    shown = loop._postfix({'loss': 1.5}, 2.0, loop._selection_map(scalars))
    assert shown == 'sel 60.00 | loss 1.5 | 2 steps/s'
    # No selection split (checkpoint.select=last or test): no mAP on the line, not the test's.
    assert loop._selection_map({checkpoints.metric_key('test', 'average_mAP'): [0.9]}) is None
    assert loop._postfix({'loss': 1.5}, 2.0, None) == 'loss 1.5 | 2 steps/s'


def test_sweep_and_show_are_library_modules_that_parse_nothing():
    code = ('import sys; import wtal_jax.tools.sweep, wtal_jax.tools.show; '
            'print("argparse" in sys.modules)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == 'False', out.stderr
    for name in ('sweep', 'show'):
        with open(os.path.join(REPO, 'wtal_jax', 'tools', name + '.py')) as f:
            source = f.read()
        for word in ('argparse', 'SystemExit', 'add_parser', 'sys.exit'):
            assert word not in source, (name, word)


def test_only_a_run_folder_holding_nothing_written_is_removed(tmp_path):
    from wtal_jax.runs import rundir
    empty = tmp_path / 'empty'
    (empty / 'checkpoints').mkdir(parents=True)   # the lock file is gone with the lock
    rundir._remove_empty(str(empty))
    assert not empty.exists()
    kept = tmp_path / 'kept'
    kept.mkdir()
    (kept / 'config.json').write_text('{}')
    rundir._remove_empty(str(kept))
    assert sorted(os.listdir(kept)) == ['config.json']
    saved = tmp_path / 'saved'
    (saved / 'checkpoints' / '2').mkdir(parents=True)
    (saved / 'checkpoints' / '2' / 'meta').write_text('{}')
    rundir._remove_empty(str(saved))
    assert (saved / 'checkpoints' / '2' / 'meta').is_file()
