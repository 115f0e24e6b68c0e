"""The training loop: exact resume, retention, divergence, data paths, seeds, devices (SPEC §4)."""

import gc
import os
import shutil
import subprocess
import sys
import textwrap
import weakref

import jax
import numpy as np
import pytest

from wtal_jax import config
from wtal_jax.errors import UserError
from wtal_jax.data import splits
from wtal_jax.postprocess.evaluator import Evaluator
from wtal_jax.runs import checkpoints, loop, rundir
from wtal_jax.runs.rundir import METRICS_FILE, REPORT_FILE, RunDir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, 'configs')

TINY = ['--config.synthetic.num_train=20',      # 5 held out for selection, 15 trained
        '--config.synthetic.num_test=8',
        '--config.synthetic.num_classes=3',
        '--config.synthetic.feature_dim=8', '--config.data.feature_dim=16',
        '--config.synthetic.min_segments=20', '--config.synthetic.max_segments=60',
        '--config.data.num_segments=32', '--config.model.embed_dim=32',
        '--config.train.batch_size=6',          # 15 = 2 x 6 + 3: every 3rd step a remainder
        '--config.train.prefetch=1', '--config.eval.chunk_segments=256',
        '--config.optim.learning_rate=1e-3']
# A log window (4 steps) that a checkpoint (every 3) cuts in the middle, evaluations every 4.
RUN = ['--config.train.log_every_steps=4', '--config.eval.every_steps=4',
       '--config.checkpoint.every_steps=3', '--config.checkpoint.keep=2']


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('data') / 'synthetic')
    splits.prepare_dataset(tiny_config(root), progress=False)
    return root


def tiny_config(root, *extra):
    return config.load_config(os.path.join(CONFIGS, 'synthetic.py'),
                              TINY + [f'--config.data.root={root}', *extra])


def train(root, workdir, *extra):
    cfg = tiny_config(root, *extra)
    return cfg, loop.train_and_evaluate(cfg, str(workdir), progress=False)


def without_timing(rows):
    return [{k: v for k, v in r.items() if k != 'steps_per_second'} for r in rows]


def saved_steps(workdir):
    folder = os.path.join(workdir, checkpoints.CHECKPOINT_DIR)
    return sorted(int(name) for name in os.listdir(folder) if name.isdigit())


def params_of(workdir, *, which='latest', seed=None):
    ckpt = rundir.load_checkpoint(str(workdir), which=which, seed=seed)
    return jax.device_get(ckpt.state), ckpt.step


def rows_of(workdir):
    return RunDir(str(workdir)).read_metrics()


@pytest.fixture(scope='module')
def uninterrupted(data_root, tmp_path_factory):
    """Two seeds at once, 8 steps."""
    workdir = tmp_path_factory.mktemp('full') / 'run'
    cfg, report = train(data_root, workdir, *RUN, '--config.train.num_steps=8',
                        '--config.seeds=[0,1]')
    return workdir, cfg, report


def test_a_run_resumed_after_losing_its_last_steps_is_exact(uninterrupted, data_root, tmp_path,
                                                            capsys):
    """As if killed after step 6's checkpoint: later checkpoints gone, their metrics rows
    written (and a torn last line). The same command then reaches the uninterrupted run's
    parameters bit for bit and writes the same metrics rows and report."""
    full_dir, _, full_report = uninterrupted
    workdir = tmp_path / 'run'
    shutil.copytree(full_dir, workdir)
    for step in saved_steps(str(workdir)):
        if step > 6:
            shutil.rmtree(workdir / 'checkpoints' / str(step))
    assert 6 in saved_steps(str(workdir))           # mid log window: its sums are saved too
    with open(workdir / METRICS_FILE, 'a') as f:
        f.write('{"step": 8, "split": "tra')      # a row torn by the kill
    os.remove(workdir / REPORT_FILE)
    _, report = train(data_root, workdir, *RUN, '--config.train.num_steps=8',
                      '--config.seeds=[0,1]')
    err = capsys.readouterr().err
    assert 'resuming from step 6' in err and 'torn last line' in err
    for seed in (0, 1):
        full, _ = params_of(full_dir, seed=seed)
        resumed, step = params_of(workdir, seed=seed)
        assert step == 8
        for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed)):
            assert np.array_equal(a, b)          # bitwise, params and Adam moments
    assert without_timing(rows_of(workdir)) == without_timing(rows_of(full_dir))
    assert report == full_report


def test_latest_k_plus_each_seeds_best_by_the_selection_split_are_kept(uninterrupted):
    workdir, cfg, report = uninterrupted
    rows = rows_of(workdir)
    selection = [r for r in rows if r['split'] == 'selection']
    assert sorted({r['step'] for r in selection}) == [4, 8]
    best = {}
    for seed in (0, 1):
        mine = [r for r in selection if r['seed'] == seed]
        best[seed] = max(mine, key=lambda r: r['average_mAP'])['step']   # ties: the earliest
        assert report['per_seed'][seed]['selected']['step'] == best[seed]
        assert rundir.load_checkpoint(str(workdir), seed=seed).step == best[seed]
    assert set(saved_steps(str(workdir))) == {6, 8} | set(best.values())
    # The report's test numbers are the test rows of those steps; 'last' is step 8.
    for seed in (0, 1):
        test = {r['step']: r for r in rows if r['split'] == 'test' and r['seed'] == seed}
        entry = report['per_seed'][seed]
        assert entry['selected']['average_mAP'] == test[best[seed]]['average_mAP']
        assert entry['last']['average_mAP'] == test[8]['average_mAP']
        assert entry['test_selection']['average_mAP'] == max(r['average_mAP']
                                                             for r in test.values())
    # config.json is the resolved config of the run.
    assert config.to_dict(RunDir(str(workdir)).read_config()) == config.to_dict(cfg)


def test_a_run_holding_several_seeds_asks_which(uninterrupted):
    workdir, _, _ = uninterrupted
    with pytest.raises(UserError, match='holds 2 seeds .*--seed'):
        rundir.load_checkpoint(str(workdir))
    with pytest.raises(UserError, match='has no seed 7'):
        rundir.load_checkpoint(str(workdir), seed=7)


def test_each_seed_equals_a_single_seed_run(uninterrupted, data_root, tmp_path):
    """vmap over seeds changes nothing per seed: parameters within 1e-5 (relative) and the
    same detections as a run of that seed alone."""
    full_dir, _, _ = uninterrupted
    _, report = train(data_root, tmp_path / 'one', *RUN, '--config.train.num_steps=8',
                      '--config.seed=1')
    alone, _ = params_of(tmp_path / 'one')
    many, _ = params_of(full_dir, seed=1)
    for a, b in zip(jax.tree.leaves(alone.params), jax.tree.leaves(many.params)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
    both = [rundir.load_checkpoint(str(d), which='latest', seed=1)
            for d in (tmp_path / 'one', full_dir)]
    cfg = both[0].cfg
    names = both[0].names
    split = splits.load_split(cfg, 'test', names, progress=False)
    evaluator = Evaluator(cfg, split, both[0].model, split_name='test')
    (m1, r1, *_), (m2, r2, *_) = (evaluator(c.state.params) for c in both)
    for video in r1['results']:
        d1, d2 = r1['results'][video], r2['results'][video]
        assert [(d['label'], d['segment']) for d in d1] == \
            [(d['label'], d['segment']) for d in d2]
        np.testing.assert_allclose([d['score'] for d in d1], [d['score'] for d in d2],
                                   rtol=1e-5)
    assert m1['average_mAP'] == pytest.approx(m2['average_mAP'], abs=1e-6)
    assert report['seeds'] == [1]


def test_host_and_device_data_train_the_same_model(data_root, tmp_path, capsys):
    runs = {}
    for mode in ('never', 'always'):
        train(data_root, tmp_path / mode, '--config.train.num_steps=3',
              '--config.eval.every_steps=3', f'--config.train.data_on_device={mode}')
        runs[mode], _ = params_of(tmp_path / mode)
    err = capsys.readouterr().err
    assert 'training data: on the host' in err and 'training data: on the device' in err
    for a, b in zip(jax.tree.leaves(runs['never']), jax.tree.leaves(runs['always'])):
        assert np.array_equal(a, b)


def test_auto_data_path_follows_the_memory_budget():
    device = jax.local_devices()[0]
    limit, what = loop.device_memory_bytes(device)
    assert limit > 0 and what
    fits, why = loop.data_on_device('auto', 0.5, int(0.4 * limit), device)
    assert fits and 'fit train.device_memory_fraction=0.5' in why
    fits, why = loop.data_on_device('auto', 0.5, int(0.6 * limit), device)
    assert not fits and 'exceed' in why
    assert loop.data_on_device('never', 0.5, 1, device)[0] is False
    assert loop.data_on_device('always', 0.5, 10 * limit, device)[0] is True


def test_divergence_stops_with_the_step_range_and_keeps_the_last_good_checkpoint(
        data_root, tmp_path):
    workdir = tmp_path / 'run'
    # A learning rate of 1e30: step 1 is computed from sane parameters, its update makes them
    # ~1e30, and the forward pass of step 2 overflows float32.
    with pytest.raises(loop.TrainingDiverged) as info:
        train(data_root, workdir, '--config.optim.learning_rate=1e30',
              '--config.train.num_steps=5', '--config.checkpoint.every_steps=1',
              '--config.train.log_every_steps=2', '--config.eval.every_steps=100')
    message = str(info.value)
    assert '\n' not in message
    assert 'non-finite' in message and 'last good checkpoint: step 1' in message
    assert saved_steps(str(workdir)) == [1]
    state, step = params_of(workdir)
    assert step == 1 and int(state.step) == 1
    leaves = jax.tree.leaves(state.params)
    assert all(np.all(np.isfinite(x)) for x in leaves)
    assert max(float(np.abs(x).max()) for x in leaves) > 1e20   # it is the diverging run's state


@pytest.mark.filterwarnings('ignore:overflow encountered in cast:RuntimeWarning')
def test_an_overflowing_update_is_not_saved_as_a_good_checkpoint(data_root, tmp_path):
    """Step 2's loss is finite (computed before its update), but its update overflows (a rate
    of 1e39 is inf in float32), so its parameters are not finite: they must not be saved."""
    workdir = tmp_path / 'run'
    with pytest.raises(loop.TrainingDiverged) as info:
        train(data_root, workdir, '--config.optim.lr_list=[0.001,1e39]',
              '--config.train.num_steps=5', '--config.checkpoint.every_steps=1',
              '--config.train.log_every_steps=10', '--config.eval.every_steps=100')
    message = str(info.value)
    assert 'non-finite parameters after step 2' in message and 'step 1' in message
    assert saved_steps(str(workdir)) == [1]
    state, step = params_of(workdir)
    assert step == 1 and all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state))


def test_resume_refuses_a_changed_training_config(data_root, tmp_path):
    workdir = tmp_path / 'run'
    train(data_root, workdir, *RUN, '--config.train.num_steps=2')
    before = saved_steps(str(workdir))
    with pytest.raises(UserError, match=r'loss\.alpha: 0\.0005 -> 0\.0'):
        train(data_root, workdir, *RUN, '--config.train.num_steps=4', '--config.loss.alpha=0')
    assert saved_steps(str(workdir)) == before
    # Longer training is a resumption, not a different run.
    train(data_root, workdir, *RUN, '--config.train.num_steps=3')
    assert max(saved_steps(str(workdir))) == 3


def test_resume_accepts_moved_data_but_refuses_other_data(data_root, tmp_path):
    workdir = tmp_path / 'run'
    train(data_root, workdir, *RUN, '--config.train.num_steps=2')
    moved = tmp_path / 'moved'
    shutil.copytree(data_root, moved)
    train(str(moved), workdir, *RUN, '--config.train.num_steps=3')     # same videos: fine
    assert max(saved_steps(str(workdir))) == 3
    # One training video one segment shorter: another data set.
    rgb = moved / 'features' / 'train' / 'rgb'
    name = sorted(os.listdir(rgb))[0]
    for stream in ('rgb', 'flow'):
        path = moved / 'features' / 'train' / stream / name
        np.save(path, np.load(path)[:-1])
    with pytest.raises(UserError, match='trained on other data') as info:
        train(str(moved), workdir, *RUN, '--config.train.num_steps=4')
    assert '\n' not in str(info.value)
    assert max(saved_steps(str(workdir))) == 3


def test_init_from_with_other_shapes_is_one_clear_error(data_root, tmp_path):
    source = tmp_path / 'source'
    train(data_root, source, '--config.train.num_steps=1', '--config.eval.every_steps=1')
    with pytest.raises(UserError, match='parameter shapes'):
        train(data_root, tmp_path / 'run', '--config.train.num_steps=1',
              '--config.model.embed_dim=16', f'--config.train.init_from={source}')


_DEVICES_LOOP = textwrap.dedent('''
    import os, sys
    import jax
    import numpy as np
    sys.path.insert(0, os.environ['TESTS_DIR'])
    from test_loop import RUN, params_of, rows_of, train, without_timing
    assert jax.local_device_count() == 4
    root, out = sys.argv[1], sys.argv[2]
    steps = '--config.train.num_steps=8'
    RUN = RUN + ['--config.train.batch_size=4']   # divisible by 1, 2 and 4 devices
    # One device, uninterrupted; four devices for 4 steps (host data, prefetch threads), then
    # resumed on two devices (device data) to step 8.
    train(root, out + '/one', *RUN, steps, '--config.train.num_devices=1')
    train(root, out + '/many', *RUN, '--config.train.num_steps=4', '--config.train.num_devices=4',
          '--config.train.data_on_device=never', '--config.train.prefetch_workers=2')
    train(root, out + '/many', *RUN, steps, '--config.train.num_devices=2',
          '--config.train.data_on_device=always')
    one, _ = params_of(out + '/one')
    many, step = params_of(out + '/many')
    assert step == 8
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(many)):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)
    print('LOOP DEVICES OK')
''')


def test_the_loop_on_several_devices_resumes_on_another_count_and_equals_one_device(
        data_root, tmp_path):
    """In a subprocess with 4 forced CPU devices: prefetch, the sharded step, save, and a
    resume with another device count reach the parameters of a one-device run."""
    env = dict(os.environ, JAX_PLATFORMS='cpu',
               XLA_FLAGS='--xla_force_host_platform_device_count=4',
               TESTS_DIR=os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, '-c', _DEVICES_LOOP, data_root, str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert 'LOOP DEVICES OK' in proc.stdout


def test_the_progress_line_puts_the_map_first_shows_one_rate_and_fits_80_columns():
    from tqdm import tqdm
    # The widest realistic values: a loss of hundreds, thousands of steps/s, ten hours.
    text = loop._postfix({'loss': 123.456}, 4321.0, 0.41903)
    assert text.startswith('sel 41.90 | loss 123.5') and text.count('/s') == 1
    line = tqdm.format_meter(99999, 100000, 35999.0, bar_format=loop.BAR_FORMAT, prefix=text)
    assert len(line) <= 80 and 'sel 41.90' in line, line


def test_training_holds_no_features_of_the_evaluated_splits(data_root, tmp_path, monkeypatch):
    """The evaluators keep packed copies: the splits' own features (the whole test split) are
    freed before the first step, not held twice for the whole run."""
    refs = []
    load_split, load_training = splits.load_split, splits.load_training

    def spy_split(*args, **kw):
        split = load_split(*args, **kw)
        refs.extend(weakref.ref(f) for f in split.features)
        return split

    def spy_training(*args, **kw):
        training, selection = load_training(*args, **kw)
        refs.extend(weakref.ref(f) for f in selection.features)
        return training, selection

    alive = []
    host_metrics = loop.training.host_metrics

    def spy_metrics(sums):
        gc.collect()
        alive.append(sum(ref() is not None for ref in refs))
        return host_metrics(sums)

    monkeypatch.setattr(splits, 'load_split', spy_split)
    monkeypatch.setattr(splits, 'load_training', spy_training)
    monkeypatch.setattr(loop.training, 'host_metrics', spy_metrics)
    train(data_root, tmp_path / 'run', '--config.train.num_steps=4',
          '--config.train.log_every_steps=2', '--config.eval.every_steps=4')
    assert len(refs) == 8 + 5   # the test split and the selection split were read
    assert alive == [0, 0]      # and are not held during training


# ---------------------------------------------------------------------------------------------
# Memory: a config that cannot fit is refused from the config, before anything is written

def _um_params(d, e, c):
    """UM's parameters by hand: the k = 3 convolution (weights and bias), the bias-free
    classifier (SPEC §2)."""
    return 3 * d * e + e + e * c


def test_the_memory_floor_of_thumos14_and_the_quick_start_by_hand():
    """The floor (runs/memory.py) against a hand count: per seed 16 bytes per parameter
    (parameters, Adam's two moments, gradients, float32) plus the step, key and the two
    optimiser counts (20 bytes); the batch's B x T x (D + 2E) and the chunk's chunk x (D + E)
    float32 values. THUMOS'14 with five seeds and the quick start stay far below 24 GiB."""
    from wtal_jax.runs import memory
    cfg = config.load_config(os.path.join(CONFIGS, 'thumos14.py'), ['--config.seeds=[0,1,2,3,4]'])
    estimate = memory.for_training(cfg, 1)
    assert estimate.terms == {'train state': 5 * (16 * _um_params(2048, 2048, 20) + 20),
                              'batches': 5 * 16 * 750 * (2048 + 2 * 2048) * 4,
                              'inference chunk': 8192 * (2048 + 2048) * 4}
    assert estimate.total == 2_618_851_428 and estimate.total < (24 << 30) / 9
    # Two devices: each holds every seed's state and half of each batch.
    assert memory.for_training(cfg, 2).terms['batches'] == 5 * 8 * 750 * 6144 * 4
    quick = config.load_config(os.path.join(CONFIGS, 'synthetic.py'))   # C from the data: 1
    assert memory.for_training(quick, 1).total == (16 * _um_params(256, 512, 1) + 20
                                                   + 16 * 256 * (256 + 1024) * 4
                                                   + 8192 * (256 + 512) * 4) < 51 << 20
    bf16 = config.load_config(os.path.join(CONFIGS, 'thumos14.py'),
                              ['--config.model.dtype=bfloat16'])
    assert memory.for_training(bf16, 1).terms['batches'] == 16 * 750 * 6144 * 2
    assert memory.for_evaluation(cfg, 20).terms == {
        'parameters': 4 * _um_params(2048, 2048, 20), 'inference chunk': 8192 * 4096 * 4}


# name -> (arguments, the term named largest and the setting to lower)
TOO_LARGE = {
    'seeds': (['--seeds', '300000', '--config.train.batch_size=1',
               '--config.model.embed_dim=512'], 'lower the seeds or model.embed_dim'),
    'batch_size': (['--config.train.batch_size=100000000'],
                   'lower train.batch_size, data.num_segments or the seeds'),
    'num_segments': (['--config.data.num_segments=4000000000',
                      '--config.eval.chunk_segments=4000000001'],
                     'lower train.batch_size, data.num_segments or the seeds'),
    'chunk_segments': (['--config.eval.chunk_segments=100000000000'],
                       'lower eval.chunk_segments'),
}


@pytest.mark.parametrize('case', sorted(TOO_LARGE))
def test_a_config_that_cannot_fit_in_memory_is_refused_before_anything_is_written(
        case, data_root, tmp_path, capsys):
    """Were MemoryError, RESOURCE_EXHAUSTED tracebacks, or a run folder holding only its
    lock; now one line with the estimate and the limit, and no run folder."""
    from wtal_jax import cli
    from wtal_jax.io_utils import available_memory_bytes
    args, knob = TOO_LARGE[case]
    workdir = tmp_path / 'run'
    status = cli.main(['train', '--config', os.path.join(CONFIGS, 'synthetic.py'), '--workdir',
                       str(workdir), '--quiet', *TINY, f'--config.data.root={data_root}', *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith('wtal-jax train: error: training needs at least '), err[0]
    assert 'of host memory available; ' + knob in err[0]
    # The limit said is the host's available memory (within what changed meanwhile).
    said = float(err[0].split('more than the ')[1].split(' GiB')[0])
    assert abs(said * 2 ** 30 - available_memory_bytes()) < 2 ** 30
    assert not workdir.exists()


def test_training_features_too_large_for_the_device_are_refused_and_the_new_folder_removed(
        data_root, tmp_path, capsys, monkeypatch):
    """With train.data_on_device=always the training features go to the device whole: the
    check counts them (here a limit of just above the step's own floor)."""
    from wtal_jax import cli
    from wtal_jax.runs import memory
    cfg = tiny_config(data_root)
    floor = memory.for_training(cfg, 1).total
    monkeypatch.setattr(memory, 'limit', lambda device: (floor + 1000, 'test memory'))
    workdir = tmp_path / 'run'
    status = cli.main(['train', '--config', os.path.join(CONFIGS, 'synthetic.py'), '--workdir',
                       str(workdir), '--quiet', *TINY, f'--config.data.root={data_root}',
                       '--config.train.data_on_device=always'])
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if not line.startswith(('note: ', 'training data: '))]
    assert status == 2 and len(err) == 1, err
    assert 'training features ' in err[0]
    assert err[0].endswith('or keep the training features on the host '
                           '(train.data_on_device=never)'), err[0]
    assert not workdir.exists()   # created for the run, emptied and removed
