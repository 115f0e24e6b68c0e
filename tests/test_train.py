"""Optimiser (SPEC §4), the train step, its pmap form and its compilation count."""

import functools
import os
import subprocess
import sys
import textwrap
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wtal_jax.method import train
from wtal_jax.method.models import UMModel


def optim_cfg(**kw):
    base = dict(learning_rate=1e-3, lr_list=(), b1=0.9, b2=0.999, eps=1e-8, weight_decay=5e-4)
    base.update(kw)
    return types.SimpleNamespace(**base)


def numpy_adam_coupled_l2(params, grads_seq, lrs, *, wd, b1=0.9, b2=0.999, eps=1e-8):
    """torch.optim.Adam(weight_decay=wd) step by step, in float64: g <- g + wd * p first."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    history = []
    for t, (grads, lr) in enumerate(zip(grads_seq, lrs), start=1):
        for k in p:
            g = np.asarray(grads[k], np.float64) + wd * p[k]
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g * g
            m_hat = m[k] / (1 - b1 ** t)
            v_hat = v[k] / (1 - b2 ** t)
            p[k] = p[k] - lr * m_hat / (np.sqrt(v_hat) + eps)
        history.append({k: x.copy() for k, x in p.items()})
    return history


def run_optax(tx, params, grads_seq):
    state = tx.init(params)
    out = []
    for grads in grads_seq:
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        out.append(params)
    return out


def random_tree(rng, scale=1.0):
    return {'w': jnp.asarray(rng.normal(0, scale, (4, 3)), jnp.float32),
            'b': jnp.asarray(rng.normal(0, scale, (3,)), jnp.float32)}


def test_adam_with_coupled_l2_matches_torch_adam_for_three_steps():
    rng = np.random.default_rng(0)
    params = random_tree(rng, 2.0)    # large weights: the decay term is far from negligible
    grads_seq = [random_tree(rng, 1e-3) for _ in range(3)]
    wd = 0.5
    tx = train.make_optimizer(optim_cfg(weight_decay=wd))
    got = run_optax(tx, params, grads_seq)
    expected = numpy_adam_coupled_l2(params, grads_seq, [1e-3] * 3, wd=wd)
    decoupled = numpy_adam_coupled_l2(params, grads_seq, [1e-3] * 3, wd=0.0)
    for g, e, d in zip(got, expected, decoupled):
        for k in params:
            np.testing.assert_allclose(g[k], e[k], rtol=1e-6, atol=1e-7)
    # The test can tell coupled decay from none at all: the trajectories differ clearly.
    assert not np.allclose(expected[-1]['w'], decoupled[-1]['w'], rtol=0, atol=1e-5)


def test_default_optimizer_hyperparameters_are_the_release():
    from wtal_jax import config
    cfg = config.default_config()
    assert (cfg.optim.learning_rate, cfg.optim.b1, cfg.optim.b2, cfg.optim.eps,
            cfg.optim.weight_decay) == (1e-4, 0.9, 0.999, 1e-8, 5e-4)
    rng = np.random.default_rng(1)
    params = random_tree(rng)
    grads_seq = [random_tree(rng) for _ in range(3)]
    got = run_optax(train.make_optimizer(cfg.optim), params, grads_seq)
    expected = numpy_adam_coupled_l2(params, grads_seq, [1e-4] * 3, wd=5e-4)
    for g, e in zip(got, expected):
        for k in params:
            np.testing.assert_allclose(g[k], e[k], rtol=1e-6, atol=1e-7)


def test_per_step_learning_rate_list():
    lr_list = (1e-3, 3e-3, 5e-4)
    schedule = train.learning_rate_schedule(1e-4, lr_list)
    got = [float(schedule(jnp.asarray(i))) for i in range(6)]
    np.testing.assert_allclose(got, [1e-3, 3e-3, 5e-4, 5e-4, 5e-4, 5e-4], rtol=1e-6)
    constant = train.learning_rate_schedule(2e-4)
    assert float(constant(7)) == pytest.approx(2e-4)

    # Through the optimiser: update i uses lr_list[i], the last value after the list ends.
    rng = np.random.default_rng(2)
    params = random_tree(rng)
    grads_seq = [random_tree(rng) for _ in range(5)]
    tx = train.make_optimizer(optim_cfg(lr_list=lr_list, weight_decay=1e-2))
    got = run_optax(tx, params, grads_seq)
    expected = numpy_adam_coupled_l2(params, grads_seq, [1e-3, 3e-3, 5e-4, 5e-4, 5e-4],
                                     wd=1e-2)
    for g, e in zip(got, expected):
        for k in params:
            np.testing.assert_allclose(g[k], e[k], rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# The train step


C, D, E, T, B = 3, 6, 16, 12, 8


def setup(*, dropout=0.0, selection_dropout=0.0, seed=0):
    model = UMModel(num_classes=C, embed_dim=E, dropout_rate=dropout)
    tx = train.make_optimizer(optim_cfg(learning_rate=1e-2))
    hp = train.StepConfig(r_act=3, r_bkg=2, selection_dropout=selection_dropout)
    state = train.create_train_state(model, tx, seed=seed, feature_dim=D, num_segments=T)
    return model, tx, hp, state


def make_batch(seed=0, *, real=B):
    rng = np.random.default_rng(seed)
    labels = np.zeros((B, C), np.float32)
    labels[np.arange(B), rng.integers(0, C, B)] = 1
    labels[0, :] = 1
    return {'features': rng.uniform(0, 2, (B, T, D)).astype(np.float32), 'labels': labels,
            'mask': (np.arange(B) < real).astype(np.float32)}


def test_create_train_state_is_deterministic_in_the_seed():
    *_, a = setup(seed=3)
    *_, b = setup(seed=3)
    *_, c = setup(seed=4)
    chex.assert_trees_all_equal(a.params, b.params)
    assert not np.array_equal(a.params['embed']['kernel'], c.params['embed']['kernel'])
    assert int(a.step) == 0


def test_step_metrics_are_sums_over_real_videos_and_the_update_ignores_padding():
    model, tx, hp, state = setup()
    batch = make_batch(0, real=5)
    step = jax.jit(functools.partial(train.train_step, model=model, tx=tx, hp=hp))
    new, metrics = step(state, batch)
    assert int(new.step) == 1 and int(metrics['count']) == 5
    # The loss sum equals the per-video losses of the real videos (no dropout: deterministic).
    sel = train.forward(model, state.params, batch['features'][:5], hp=hp)
    parts = train.per_video_losses(sel, batch['labels'][:5], hp)
    for name in ('loss', 'loss_cls', 'loss_um', 'loss_be'):
        np.testing.assert_allclose(metrics[name], np.sum(parts[name]), rtol=1e-5)
    host = train.host_metrics(metrics)
    assert host['loss'] == pytest.approx(float(np.mean(parts['loss'])), rel=1e-5)
    # Gradient = gradient of the mean loss over real videos: an Adam step from the same state
    # on the 5 videos alone gives the same parameters.
    alone = {k: v[:5] for k, v in batch.items()}
    single, _ = jax.jit(functools.partial(train.train_step, model=model, tx=tx, hp=hp))(
        state, alone)
    # (Adam's first step hardly depends on the gradient's scale: compare its moments too.)
    chex.assert_trees_all_close(new.params, single.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(new.opt_state, single.opt_state, rtol=1e-5, atol=1e-9)
    # Garbage in the padded rows changes nothing.
    other = dict(batch, features=batch['features'].copy(), labels=batch['labels'].copy())
    other['features'][5:] = 1e3
    other['labels'][5:] = 0
    new2, metrics2 = step(state, other)
    chex.assert_trees_all_close(new.params, new2.params, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(new.opt_state, new2.opt_state, rtol=1e-6, atol=1e-9)
    chex.assert_trees_all_close(metrics, metrics2, rtol=1e-6)


def test_shard_batch_shapes_and_error():
    batch = make_batch(0)
    sharded = train.shard_batch(batch, 4)
    assert sharded['features'].shape == (4, 2, T, D)
    assert sharded['mask'].shape == (4, 2)
    np.testing.assert_array_equal(sharded['features'][1, 0], batch['features'][2])
    assert train.shard_batch(batch, 1) is batch
    with pytest.raises(ValueError, match='batch size 8 does not divide 3 devices'):
        train.shard_batch(batch, 3)


def test_step_compiles_once_across_steps_and_a_remainder_batch(monkeypatch):
    traces = []

    def counted(*args, **kwargs):
        traces.append(1)
        return original(*args, **kwargs)

    original = train.train_step
    # At most one trace of the step function, whatever the batch contents and step.
    monkeypatch.setattr(train, 'train_step', chex.assert_max_traces(counted, n=1))
    model, tx, hp, state = setup(dropout=0.5, selection_dropout=0.7)
    step_fn = train.compile_train_step(model, tx, hp, num_devices=1)
    for i, real in enumerate([B, B, 3, B, 5]):       # remainder batches carry mask zeros
        state, metrics = step_fn(state, make_batch(i, real=real))
        assert int(metrics['count']) == real
    assert len(traces) == 1 and int(state.step) == 5
    assert step_fn._cache_size() == 1


def test_dropout_step_is_deterministic_for_a_seed_and_changes_with_it():
    def run(seed):
        model, tx, hp, state = setup(dropout=0.7, selection_dropout=0.7, seed=seed)
        step_fn = train.compile_train_step(model, tx, hp, num_devices=1)
        out = []
        for i in range(2):
            state, metrics = step_fn(state, make_batch(i))
            out.append(train.host_metrics(metrics))
        return jax.device_get(state.params), out

    p1, m1 = run(0)
    p2, m2 = run(0)
    chex.assert_trees_all_equal(p1, p2)
    assert m1 == m2
    assert all(np.isfinite(v) for m in m1 for v in m.values())


_PMAP_CHECK = textwrap.dedent('''
    import os
    import jax
    import jax.numpy as jnp
    import numpy as np
    import sys
    sys.path.insert(0, os.environ['TESTS_DIR'])
    from test_train import make_batch, setup
    from wtal_jax.method import train, losses

    assert jax.local_device_count() == 4, jax.local_devices()

    def run(num_devices, *, dropout):
        model, tx, hp, state = setup(dropout=dropout, selection_dropout=dropout)
        batch = make_batch(0, real=6)               # two padded videos: mask 0
        step_fn = train.compile_train_step(model, tx, hp, num_devices)
        rng0 = state.rng
        new, metrics = step_fn(state, train.shard_batch(batch, num_devices))
        return model, hp, rng0, batch, jax.device_get(new), jax.device_get(metrics)

    # Without randomness, the 4-device step is the 1-device step on the same global batch.
    _, _, _, _, one, m1 = run(1, dropout=0.0)
    _, _, _, _, four, m4 = run(4, dropout=0.0)
    assert int(four.step) == 1 == int(one.step)
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree.leaves(one.opt_state), jax.tree.leaves(four.opt_state)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)
    assert int(m1['count']) == int(m4['count']) == 6
    for k in m1:
        np.testing.assert_allclose(m1[k], m4[k], rtol=1e-6, err_msg=k)

    # With dropout: deterministic for the seed; device d draws its dropout and selection mask
    # from fold_in(fold_in(rng, step), d), so the loss is the sum of those four forward passes
    # (one shared key would give a different sum).
    model, hp, rng0, batch, d1, dm1 = run(4, dropout=0.7)
    _, _, _, _, d2, dm2 = run(4, dropout=0.7)
    for a, b in zip(jax.tree.leaves(d1), jax.tree.leaves(d2)):
        np.testing.assert_array_equal(a, b)
    assert all(np.isfinite(v).all() for v in jax.tree.leaves(dm1))
    init_state = setup(dropout=0.7, selection_dropout=0.7)[3]
    step_key = jax.random.fold_in(rng0, 0)
    shards = train.shard_batch(batch, 4)
    per_device = []
    for d in range(4):
        key = jax.random.fold_in(step_key, d)
        sel = train.forward(model, init_state.params, shards['features'][d], hp=hp, key=key)
        parts = train.per_video_losses(sel, shards['labels'][d], hp)
        per_device.append(float(jnp.sum(parts['loss'] * shards['mask'][d])))
    np.testing.assert_allclose(float(dm1['loss']), sum(per_device), rtol=1e-5)
    print('PMAP OK')
''')


def test_pmap_step_equals_single_device_step():
    """In a subprocess: 4 CPU devices must be configured before JAX starts."""
    env = dict(os.environ, JAX_PLATFORMS='cpu',
               XLA_FLAGS='--xla_force_host_platform_device_count=4',
               TESTS_DIR=os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, '-c', _PMAP_CHECK], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert 'PMAP OK' in proc.stdout
