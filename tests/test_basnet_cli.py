"""BaS-Net through the commands (``wtal_jax.cli.main``, in process): train, evaluate and detect
on a tiny synthetic data set (test_cli.py's); the PyTorch round trip with the release's model
(``tests/basnet_release.py``); bad input answered in one line with exit status 2, nothing
written."""

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import types

import jax
import numpy as np
import pytest

import basnet_release as rel
from test_basnet import small_torch
from test_basnet_scores import assert_same_detections
from test_cli import (SYNTHETIC_CONFIG, TINY, assert_ok, assert_one_line_error,  # noqa: F401
                      data_root, video_names)
from wtal_jax import cli, config
from wtal_jax.data import splits
from wtal_jax.method.basnet import METHOD
from wtal_jax.method.um import METHOD as UM
from wtal_jax.postprocess.evaluator import Evaluator
from wtal_jax.runs import rundir
from wtal_jax.tools import torch_convert

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASNET_CONFIG = os.path.join(REPO, 'configs', 'basnet_thumos14.py')
# test_cli's tiny sizes (D = 16, E = 32, T = 32, 3 classes) and a filter of 8; class names
# from the data set's annotations
SMALL = [*TINY, '--config.model.filter_dim=8', '--config.data.class_names=']
TORCH_REASON = "PyTorch interop tests need the [torch] extra: pip install -e '.[torch]'"


@pytest.fixture(scope='module')
def torch():
    return pytest.importorskip('torch', reason=TORCH_REASON)


def run(capsys, *argv):
    """An in-process ``wtal-jax`` call, shaped as test_cli's subprocess results."""
    capsys.readouterr()
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return types.SimpleNamespace(returncode=status, stdout=out, stderr=err)


def tree_hash(folder):
    """sha256 of every file's relative path and bytes under ``folder``."""
    digest = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(folder)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, folder).encode() + b'\0')
            with open(path, 'rb') as f:
                digest.update(f.read())
    return digest.hexdigest()


def release_model(torch, num_classes=3):
    """The oracle's BaS_Net at the tiny sizes, eval mode."""
    return rel.release_model(small_torch(torch, filter_dim=8, embed_dim=32), feature_dim=16,
                             num_classes=num_classes, num_segments=32).eval()


@pytest.fixture(scope='module')
def basnet_run(data_root, tmp_path_factory):
    """configs/basnet_thumos14.py on the tiny data set: 4 steps, evaluated at 2 and 4."""
    workdir = str(tmp_path_factory.mktemp('run_b') / 'run')
    status = cli.main(['train', '--config', BASNET_CONFIG, '--workdir', workdir, '--quiet',
                       *SMALL, f'--config.data.root={data_root}', '--config.train.num_steps=4',
                       '--config.eval.every_steps=2', '--config.checkpoint.every_steps=2'])
    assert status == 0
    return workdir


@pytest.fixture(scope='module')
def um_run(data_root, tmp_path_factory):
    """A UM run on the same data, one step."""
    workdir = str(tmp_path_factory.mktemp('run_u') / 'run')
    status = cli.main(['train', '--config', SYNTHETIC_CONFIG, '--workdir', workdir, '--quiet',
                       *TINY, f'--config.data.root={data_root}', '--config.train.num_steps=1',
                       '--config.eval.every_steps=1', '--config.checkpoint.every_steps=1'])
    assert status == 0
    return workdir


# ---------------------------------------------------------------------------------------------
# End to end


def _check_thresholds_and_averages(metrics):
    """0.1:0.9 (9 thresholds), the 0.1:0.9 average first and the 0.1:0.7 one beside it."""
    np.testing.assert_array_equal(metrics['tiou_thresholds'], np.linspace(0.1, 0.9, 9))
    assert len(metrics['mAP']) == 9
    assert metrics['average_mAP'] == pytest.approx(np.mean(metrics['mAP']), abs=1e-12)
    assert metrics['averages']['0.1:0.9'] == pytest.approx(np.mean(metrics['mAP']), abs=1e-12)
    assert metrics['averages']['0.1:0.7'] == pytest.approx(np.mean(metrics['mAP'][:7]),
                                                           abs=1e-12)


def test_train_writes_a_basnet_run(basnet_run):
    with open(os.path.join(basnet_run, 'config.json')) as f:
        saved = json.load(f)
    assert saved['method'] == 'basnet' and saved['model']['filter_dim'] == 8
    assert saved['localize']['nms_iou'] == 0.7 and saved['train']['batch_order'] == 'draws'
    rows = rundir.RunDir(basnet_run).read_metrics()
    train = [r for r in rows if r['split'] == 'train']
    assert [r['step'] for r in train] == [1, 2, 3, 4]
    for r in train:
        assert r['loss'] == pytest.approx(r['loss_base'] + r['loss_supp'] + 1e-4 * r['loss_norm'],
                                          rel=1e-5)
    tests = [r for r in rows if r['split'] == 'test']
    assert [r['step'] for r in tests] == [2, 4]
    for r in tests:
        _check_thresholds_and_averages(r)
    with open(os.path.join(basnet_run, 'report.json')) as f:
        report = json.load(f)
    np.testing.assert_array_equal(report['tiou_thresholds'], np.linspace(0.1, 0.9, 9))
    assert {'0.1:0.7', '0.1:0.9'} <= set(report['summary']['selected']['averages'])


@pytest.fixture(scope='module')
def evaluated(basnet_run):
    """``evaluate`` of the BaS-Net run (its best step on the selection split): its output."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(['evaluate', '--workdir', basnet_run, '--quiet'])
    return types.SimpleNamespace(returncode=status, stdout=out.getvalue(),
                                 stderr=err.getvalue())


def test_evaluate_and_detect(basnet_run, evaluated, data_root, tmp_path, capsys):
    proc = evaluated
    assert_ok(proc)
    lines = proc.stdout.splitlines()
    assert any(line.startswith('mAP@tIoU') and line.endswith('0.8 0.9') for line in lines)
    averages = next(line for line in lines if line.startswith('average over'))
    assert '0.1:0.7' in averages and '0.1:0.9' in averages
    with open(os.path.join(basnet_run, 'metrics_test.json')) as f:
        metrics = json.load(f)
    _check_thresholds_and_averages(metrics)
    with open(os.path.join(basnet_run, 'results_test.json')) as f:
        results = json.load(f)['results']
    names = video_names(data_root, 'test')
    assert results and set(results) <= set(names)
    labels = {d['label'] for dets in results.values() for d in dets}
    assert labels <= {'Class00', 'Class01', 'Class02'}

    picked = [n for n in names if n in results][:3]
    specs = [','.join(os.path.join(data_root, 'features', 'test', s, n + '.npy')
                      for s in ('rgb', 'flow')) for n in picked]
    out = tmp_path / 'detections.json'
    proc = run(capsys, 'detect', '--checkpoint', basnet_run, '--output', str(out), *specs)
    assert_ok(proc)
    with open(out) as f:
        detected = json.load(f)['results']
    assert list(detected) == picked
    for name in picked:     # the same checkpoint and features: the same detections
        a, b = detected[name], results[name]
        assert [d['label'] for d in a] == [d['label'] for d in b]
        np.testing.assert_allclose([d['score'] for d in a], [d['score'] for d in b], rtol=1e-5)
        np.testing.assert_allclose([d['segment'] for d in a], [d['segment'] for d in b],
                                   rtol=1e-6)


def test_evaluate_gives_the_releases_results_and_accuracy(torch, basnet_run, evaluated):
    """The evaluated checkpoint in the release's model (its exported weights) gives our network
    outputs on every test video, and the release's test() on those outputs gives exactly the
    results file and the video accuracy that ``evaluate`` wrote."""
    assert_ok(evaluated)
    with open(os.path.join(basnet_run, 'metrics_test.json')) as f:
        metrics = json.load(f)
    with open(os.path.join(basnet_run, 'results_test.json')) as f:
        written = json.load(f)['results']
    ckpt = rundir.load_checkpoint(os.path.join(basnet_run, 'checkpoints', str(metrics['step'])))
    split = splits.load_split(ckpt.cfg, 'test', ckpt.names, progress=False)
    outputs = Evaluator(ckpt.cfg, split, ckpt.model, split_name='test').outputs(
        ckpt.state.params)
    model = release_model(torch, num_classes=len(ckpt.names))
    model.load_state_dict(torch_convert.params_to_torch_state_dict(ckpt.state.params, ckpt.cfg),
                          strict=True)
    videos = []
    for name, feats, label, out in zip(split.names, split.features, split.labels, outputs):
        x = feats[rel.release_sample_test(len(feats), 32)]
        with torch.no_grad():
            _, _, p_supp, cas_supp, _ = model(torch.from_numpy(x[None]))
        assert out.length == 32
        ours = out.outputs['p_supp'], out.outputs['cas_supp'][:32]
        np.testing.assert_allclose(ours[0], p_supp[0].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ours[1], cas_supp[0].numpy(), rtol=1e-4, atol=1e-5)
        videos.append((name, label, *ours, len(feats)))
    want, accuracy = rel.release_test(videos, class_names=ckpt.names, num_segments=32,
                                      on_crash='skip_threshold')
    assert list(written) == list(want['results'])
    assert sum(len(d) for d in want['results'].values()) > 20
    for name, detections in want['results'].items():
        assert_same_detections(written[name], detections)
    assert metrics['video_accuracy'] == pytest.approx(accuracy, abs=1e-15)
    assert metrics['accuracy_threshold'] == 0.25


def test_synthetic_config_rebased_on_basnet():
    cfg = config.load_config(SYNTHETIC_CONFIG, ['--config.method=basnet'])
    assert cfg.method == 'basnet' and cfg.synthetic.enabled
    assert (cfg.model.filter_dim, cfg.localize.nms_iou, cfg.localize.theta_vid) == (512, 0.7, 0.25)
    assert cfg.eval.tiou_thresholds == tuple(np.linspace(0.1, 0.9, 9))
    assert cfg.data.num_segments == 256      # the file's own change is kept


# ---------------------------------------------------------------------------------------------
# PyTorch round trip


def test_export_loads_into_the_release_and_converts_back_bit_for_bit(torch, basnet_run,
                                                                     tmp_path, capsys):
    exported = str(tmp_path / 'basnet.pkl')
    assert_ok(run(capsys, 'export-torch', '--workdir', basnet_run, exported))
    state_dict = torch.load(exported, map_location='cpu', weights_only=True)
    model = release_model(torch)
    assert list(state_dict) == list(model.state_dict())
    model.load_state_dict(state_dict, strict=True)

    converted = str(tmp_path / 'converted')
    assert_ok(run(capsys, 'convert-torch', exported, '--config',
                  os.path.join(basnet_run, 'config.json'), '--workdir', converted))
    source = rundir.load_checkpoint(basnet_run, which='best')
    back = rundir.load_checkpoint(converted)
    assert back.names == source.names and back.cfg.method == 'basnet'
    jax.tree.map(np.testing.assert_array_equal, back.state.params, source.state.params)
    assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(back.state.params))
    # and the release's forward equals ours on the converted run
    x = np.random.default_rng(0).random((2, 32, 16)).astype(np.float32)
    with torch.no_grad():
        _, _, p_supp, cas_supp, _ = model(torch.from_numpy(x))
    hp = config.frozen(back.cfg)
    seg = jax.vmap(lambda v: METHOD.segments(back.model, back.state.params, v, hp=hp))(x)
    out = METHOD.videos(seg, hp=hp)
    np.testing.assert_allclose(out['p_supp'], p_supp.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out['cas_supp'], cas_supp.numpy(), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit status 2, nothing written


@pytest.fixture
def run_copy(basnet_run, tmp_path):
    """A copy of the BaS-Net run, to point failing commands at, and its hash."""
    copy = str(tmp_path / 'existing')
    shutil.copytree(basnet_run, copy)
    return copy, tree_hash(copy)


@pytest.mark.parametrize('existing', [False, True])
def test_unknown_method_name(existing, data_root, run_copy, tmp_path, capsys):
    workdir = run_copy[0] if existing else str(tmp_path / 'run')
    proc = run(capsys, 'train', '--config', SYNTHETIC_CONFIG, '--workdir', workdir,
               '--quiet', *TINY, f'--config.data.root={data_root}', '--config.method=nope')
    assert_one_line_error(proc, 'train', "'nope'", 'um', 'basnet')
    if existing:
        assert tree_hash(workdir) == run_copy[1]
    else:
        assert not os.path.exists(workdir)


METHOD_FILES = {
    'no METHOD': ('X = 1\n', ['defines no METHOD']),
    'not a Method': ('METHOD = {"name": "x"}\n', ['METHOD is a dict']),
    'missing function': ('from wtal_jax.method.basnet import METHOD as _B\n'
                         'METHOD = _B._replace(losses=None)\n',
                         ['METHOD.losses', 'not a function']),
    'two missing': ('from wtal_jax.method.basnet import METHOD as _B\n'
                    'METHOD = _B._replace(model=None, scores="x")\n',
                    ['METHOD.model, METHOD.scores are not']),
}


@pytest.mark.parametrize('case', list(METHOD_FILES))
def test_user_method_file_without_a_complete_method(case, data_root, tmp_path, capsys):
    source, words = METHOD_FILES[case]
    path = tmp_path / 'my_method.py'
    path.write_text(source)
    workdir = tmp_path / 'run'
    proc = run(capsys, 'train', '--config', SYNTHETIC_CONFIG, '--workdir', str(workdir),
               '--quiet', *TINY, f'--config.data.root={data_root}', f'--config.method={path}')
    assert_one_line_error(proc, 'train', str(path), *words)
    assert not workdir.exists()


def _zeros_state_dict(torch, layout, cfg, num_classes):
    return {key: torch.zeros(tuple(size for _, size in axes))
            for key, axes in layout.shapes(cfg, num_classes).items()}


@pytest.mark.parametrize('file_method', ['um', 'basnet'])
def test_convert_torch_of_the_other_methods_state_dict(torch, file_method, data_root, run_copy,
                                                       tmp_path, capsys):
    """A UM file with a BaS-Net config and the reverse: one line saying whose keys they are,
    into a new folder and (with --force) over an existing run, which stays as it was."""
    path = str(tmp_path / f'{file_method}.pkl')
    if file_method == 'um':
        cfg = config.load_config(SYNTHETIC_CONFIG, [*TINY, f'--config.data.root={data_root}'])
        torch.save(_zeros_state_dict(torch, UM.torch, cfg, 3), path)
        argv = ['--config', BASNET_CONFIG, *SMALL, f'--config.data.root={data_root}']
        other = 'basnet'
    else:
        torch.save(release_model(torch).state_dict(), path)
        argv = ['--config', SYNTHETIC_CONFIG, *TINY, f'--config.data.root={data_root}']
        other = 'um'
    workdir = tmp_path / 'run'
    for target, force in ((str(workdir), []), (run_copy[0], ['--force'])):
        proc = run(capsys, 'convert-torch', path, '--workdir', target, *argv, *force)
        assert_one_line_error(proc, 'convert-torch', path,
                              f'not the {other.upper() if other == "um" else other} release',
                              f"its keys are the {file_method} release's",
                              f'method={file_method}')
    assert not workdir.exists()
    assert tree_hash(run_copy[0]) == run_copy[1]


def files_under(folder):
    return [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names]


INIT_FROM = ['basnet from um', 'um from basnet']


def _init_from_other(direction, basnet_run, um_run, data_root, tmp_path, capsys):
    """``train --config.train.init_from=RUN`` with RUN a run of the other method: the result,
    the source run, its hash before, and the new workdir."""
    source = um_run if direction == 'basnet from um' else basnet_run
    before = tree_hash(source)
    if direction == 'basnet from um':
        argv = ['--config', BASNET_CONFIG, *SMALL]
    else:
        argv = ['--config', SYNTHETIC_CONFIG, *TINY]
    workdir = tmp_path / 'run'
    proc = run(capsys, 'train', *argv, '--workdir', str(workdir), '--quiet',
               f'--config.data.root={data_root}', '--config.train.num_steps=1',
               f'--config.train.init_from={source}')
    return proc, source, before, workdir


@pytest.mark.parametrize('direction', INIT_FROM)
def test_init_from_a_run_of_the_other_method_fails_cleanly(direction, basnet_run, um_run,
                                                           data_root, tmp_path, capsys):
    """Exit 2, the error on the last line, the source run untouched, no file written in the
    new run's folder but its lock (rundir.LOCK_FILE: the folder and an empty checkpoints
    folder are made before the check)."""
    proc, source, before, workdir = _init_from_other(direction, basnet_run, um_run, data_root,
                                                     tmp_path, capsys)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('wtal-jax train: error: ') and source in last
    assert tree_hash(source) == before
    assert [os.path.relpath(f, workdir) for f in files_under(workdir)] in ([], ['.lock'])


@pytest.mark.parametrize('direction', INIT_FROM)
def test_init_from_a_run_of_the_other_method_says_so_in_one_line(direction, basnet_run, um_run,
                                                                 data_root, tmp_path, capsys):
    proc, source, _, _ = _init_from_other(direction, basnet_run, um_run, data_root, tmp_path,
                                          capsys)
    assert_one_line_error(proc, 'train', source)
    line = proc.stderr.strip()
    assert re.search(r'\bum\b', line) and re.search(r'\bbasnet\b', line), line
