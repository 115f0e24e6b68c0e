"""Checkpoints: exact resume, latest-K plus best-by-metric retention, divergence (SPEC §4)."""

import json
import os

import jax
import numpy as np
import pytest

from wtal_jax.runs import checkpointing, experiment
from wtal_jax import config
from wtal_jax.data import synthetic

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')

TINY = ['--config.synthetic.num_train=20',      # 20 = 2 x 8 + 4: every 3rd step a remainder
        '--config.synthetic.num_test=8',
        '--config.synthetic.num_classes=3',
        '--config.synthetic.feature_dim=8', '--config.data.feature_dim=16',
        '--config.synthetic.min_segments=20', '--config.synthetic.max_segments=60',
        '--config.data.num_segments=32', '--config.model.embed_dim=32',
        '--config.train.batch_size=8', '--config.train.log_every_steps=1',
        '--config.train.prefetch=1', '--config.eval.chunk_segments=256',
        '--config.optim.learning_rate=1e-3']


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('data') / 'synthetic')
    cfg = tiny_config(root)
    experiment.prepare_dataset(cfg, progress=False)
    assert os.path.exists(os.path.join(root, synthetic.COMPLETE_MARKER))
    return root


def tiny_config(root, *extra):
    return config.load_config(os.path.join(CONFIGS, 'synthetic.py'),
                              TINY + [f'--config.data.root={root}', *extra])


def train(root, workdir, *extra):
    cfg = tiny_config(root, *extra)
    return cfg, experiment.train_and_evaluate(cfg, str(workdir), progress=False)


def without_timing(rows):
    return [{k: v for k, v in r.items() if k != 'steps_per_second'} for r in rows]


def saved_steps(workdir):
    folder = os.path.join(workdir, checkpointing.CHECKPOINT_DIR)
    return sorted(int(name) for name in os.listdir(folder) if name.isdigit())


def latest_state(workdir):
    _, _, _, state, step = experiment.load_checkpoint(str(workdir), which='latest')
    return jax.device_get(state), step


RUN = ['--config.eval.every_steps=2', '--config.checkpoint.every_steps=1',
       '--config.checkpoint.keep=2']


@pytest.fixture(scope='module')
def uninterrupted(data_root, tmp_path_factory):
    workdir = tmp_path_factory.mktemp('full') / 'run'
    cfg, final = train(data_root, workdir, *RUN, '--config.train.num_steps=8')
    return workdir, cfg, final


def test_resume_is_exact(data_root, uninterrupted, tmp_path):
    full_dir, _, full_final = uninterrupted
    workdir = tmp_path / 'run'
    train(data_root, workdir, *RUN, '--config.train.num_steps=4')     # "interrupted" at 4
    assert max(saved_steps(workdir)) == 4
    _, final = train(data_root, workdir, *RUN, '--config.train.num_steps=8')   # same command
    full_state, full_step = latest_state(full_dir)
    state, step = latest_state(workdir)
    assert step == full_step == 8 and int(state.step) == 8
    for a, b in zip(jax.tree.leaves(full_state), jax.tree.leaves(state)):
        assert np.array_equal(a, b)                        # bitwise, params and Adam moments
    full_rows = without_timing(experiment.read_metrics(str(full_dir)))
    rows = without_timing(experiment.read_metrics(str(workdir)))
    assert [r['step'] for r in rows if r['split'] == 'train'] == list(range(1, 9))
    assert rows == full_rows
    assert without_timing([final]) == without_timing([full_final])


def test_latest_k_plus_best_by_metric_are_kept(uninterrupted):
    workdir, cfg, _ = uninterrupted
    steps = saved_steps(str(workdir))
    evals = [r for r in experiment.read_metrics(str(workdir)) if r['split'] == 'test']
    assert [r['step'] for r in evals] == [2, 4, 6, 8]
    best_value = max(r['average_mAP'] for r in evals)
    best = max(r['step'] for r in evals if r['average_mAP'] == best_value)  # ties: the latest
    assert set(steps) == {7, 8} | {best}
    manager = checkpointing.open_manager(str(workdir), read_only=True)
    key = checkpointing.metric_key('test', 'average_mAP')
    assert checkpointing.best_step(manager, key) == best
    assert experiment.find_checkpoint(str(workdir))[1] == best
    assert manager.metrics(best)[key] == best_value
    # config.json is the resolved config of the run.
    with open(os.path.join(workdir, checkpointing.CONFIG_FILE)) as f:
        assert json.load(f) == config.to_dict(cfg)
    assert checkpointing.read_config(str(workdir)).train.num_steps == 8


def test_manager_keeps_the_best_across_reopening(tmp_path):
    """Latest K plus the best, also when the best was saved by an earlier process."""
    key = 'test/average_mAP'
    state = {'w': np.arange(3.0)}

    def save_all(items):
        manager = checkpointing.open_manager(str(tmp_path), keep=2, best_metric=key)
        for step, value in items:
            metrics = None if value is None else {key: value}
            checkpointing.save(manager, step, {'w': state['w'] * step}, {'step': step}, metrics)
        manager.close()

    save_all([(1, 0.2), (2, None), (3, 0.9), (4, 0.1), (5, None)])
    assert saved_steps(str(tmp_path)) == [3, 4, 5]
    save_all([(6, 0.3), (7, None)])                    # a resumed run: a new manager
    assert saved_steps(str(tmp_path)) == [3, 6, 7]
    manager = checkpointing.open_manager(str(tmp_path), read_only=True)
    assert checkpointing.best_step(manager, key) == 3
    assert checkpointing.best_step(manager, key, 'min') == 6
    assert checkpointing.best_step(manager, 'test/other') is None
    restored, meta = checkpointing.restore(manager, 3, {'w': np.zeros(3)})
    np.testing.assert_array_equal(restored['w'], [0.0, 3.0, 6.0])
    assert meta == {'step': 3}


def test_divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint(data_root, tmp_path):
    workdir = tmp_path / 'run'
    # A learning rate of 1e30: step 1 is computed from sane parameters, its update makes them
    # ~1e30, and the forward pass of step 2 overflows float32.
    with pytest.raises(experiment.TrainingDiverged) as info:
        train(data_root, workdir, '--config.optim.learning_rate=1e30',
              '--config.train.num_steps=5', '--config.checkpoint.every_steps=1',
              '--config.eval.every_steps=100')
    message = str(info.value)
    assert 'step 2' in message and 'step 1' in message and '\n' not in message
    assert saved_steps(str(workdir)) == [1]
    rows = experiment.read_metrics(str(workdir))
    assert [r['step'] for r in rows] == [1] and np.isfinite(rows[0]['loss'])
    state, step = latest_state(workdir)
    assert step == 1 and int(state.step) == 1
    leaves = jax.tree.leaves(state.params)
    assert all(np.all(np.isfinite(x)) for x in leaves)
    assert max(float(np.abs(x).max()) for x in leaves) > 1e20   # it is the diverging run's state


@pytest.mark.filterwarnings('ignore:overflow encountered in cast:RuntimeWarning')
def test_an_overflowing_update_is_not_saved_as_a_good_checkpoint(data_root, tmp_path):
    """Step 2's loss is finite (computed before its update), but its update overflows (a rate
    of 1e39 is inf in float32), so its parameters are not finite: they must not be saved."""
    workdir = tmp_path / 'run'
    with pytest.raises(experiment.TrainingDiverged) as info:
        train(data_root, workdir, '--config.optim.lr_list=[0.001,1e39]',
              '--config.train.num_steps=5', '--config.checkpoint.every_steps=1',
              '--config.eval.every_steps=100')
    message = str(info.value)
    assert 'non-finite parameters after step 2' in message and 'step 1' in message
    assert saved_steps(str(workdir)) == [1]
    state, step = latest_state(workdir)
    assert step == 1 and all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state))


def test_resume_refuses_a_changed_training_config(data_root, tmp_path):
    workdir = tmp_path / 'run'
    train(data_root, workdir, *RUN, '--config.train.num_steps=2')
    before = saved_steps(workdir)
    with pytest.raises(experiment.UserError, match=r'loss\.alpha: 0\.0005 -> 0\.0'):
        train(data_root, workdir, *RUN, '--config.train.num_steps=4', '--config.loss.alpha=0')
    assert saved_steps(workdir) == before
    # Longer training is a resumption, not a different run.
    train(data_root, workdir, *RUN, '--config.train.num_steps=3')
    assert max(saved_steps(workdir)) == 3


def test_init_from_with_other_shapes_is_one_clear_error(data_root, uninterrupted, tmp_path):
    full_dir, _, _ = uninterrupted
    with pytest.raises(experiment.UserError, match='parameter shapes'):
        train(data_root, tmp_path / 'run', '--config.train.num_steps=1',
              '--config.model.embed_dim=16', f'--config.train.init_from={full_dir}')
