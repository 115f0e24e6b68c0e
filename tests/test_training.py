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

from wtal_jax import config, training
from wtal_jax.method.um import METHOD
from wtal_jax.method.um.losses import cls_scale
from wtal_jax.method.um.models import UMModel


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
    tx = training.make_optimizer(optim_cfg(weight_decay=wd))
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
    got = run_optax(training.make_optimizer(cfg.optim), params, grads_seq)
    expected = numpy_adam_coupled_l2(params, grads_seq, [1e-4] * 3, wd=5e-4)
    for g, e in zip(got, expected):
        for k in params:
            np.testing.assert_allclose(g[k], e[k], rtol=1e-6, atol=1e-7)


def test_per_step_learning_rate_list():
    lr_list = (1e-3, 3e-3, 5e-4)
    schedule = training.learning_rate_schedule(1e-4, lr_list)
    got = [float(schedule(jnp.asarray(i))) for i in range(6)]
    np.testing.assert_allclose(got, [1e-3, 3e-3, 5e-4, 5e-4, 5e-4, 5e-4], rtol=1e-6)
    constant = training.learning_rate_schedule(2e-4)
    assert float(constant(7)) == pytest.approx(2e-4)

    # Through the optimiser: update i uses lr_list[i], the last value after the list ends.
    rng = np.random.default_rng(2)
    params = random_tree(rng)
    grads_seq = [random_tree(rng) for _ in range(5)]
    tx = training.make_optimizer(optim_cfg(lr_list=lr_list, weight_decay=1e-2))
    got = run_optax(tx, params, grads_seq)
    expected = numpy_adam_coupled_l2(params, grads_seq, [1e-3, 3e-3, 5e-4, 5e-4, 5e-4],
                                     wd=1e-2)
    for g, e in zip(got, expected):
        for k in params:
            np.testing.assert_allclose(g[k], e[k], rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# The train step


C, D, E, T, B = 3, 6, 16, 12, 8
NAMES = ('loss', 'loss_cls', 'loss_um', 'loss_be')   # UM's losses


def step_hp(**settings):
    """The default config, frozen, with these model and loss settings (the step's ``hp``)."""
    cfg = config.default_config()
    for key, value in settings.items():
        cfg['model' if key in cfg.model else 'loss'][key] = value
    return config.frozen(cfg)


def any_keys(num_videos):
    """Keys for a pass with no dropout at all: the keyed pass is then deterministic."""
    return jax.random.split(jax.random.PRNGKey(0), num_videos)


def setup(*, dropout=0.0, selection_dropout=0.0, seed=0):
    model = UMModel(num_classes=C, embed_dim=E, dropout_rate=dropout)
    tx = training.make_optimizer(optim_cfg(learning_rate=1e-2))
    hp = step_hp(r_act=3, r_bkg=2, selection_dropout=selection_dropout)
    state = training.create_train_state(model, tx, seed=seed, feature_dim=D, num_segments=T)
    return model, tx, hp, state


def plain_step(model, tx, hp):
    """UM's train step on one device, jit-compiled: ``(state, batch) -> (state, metrics)``."""
    return jax.jit(functools.partial(training.train_step, method=METHOD, module=model, tx=tx,
                                     hp=hp))


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
    step = plain_step(model, tx, hp)
    new, metrics = step(state, batch)
    assert int(new.step) == 1 and int(metrics['count']) == 5
    # The loss sum equals the per-video losses of the real videos (no dropout: deterministic).
    sel = training.forward(METHOD, model, state.params, batch['features'][:5], hp=hp,
                           keys=any_keys(5))
    parts = METHOD.losses(sel, batch['labels'][:5], hp=hp)
    for name in ('loss', 'loss_cls', 'loss_um', 'loss_be'):
        np.testing.assert_allclose(metrics[name], np.sum(parts[name]), rtol=1e-5)
    # Gradient = gradient of the mean loss over real videos: an Adam step from the same state
    # on the 5 videos alone gives the same parameters.
    alone = {k: v[:5] for k, v in batch.items()}
    single, _ = step(state, alone)
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


def test_host_metrics_divide_each_seeds_sums_by_its_count():
    sums = {'loss': np.array([6.0, 1.0], np.float32), 'loss_um': np.array([3.0, 0.5], np.float32),
            'count': np.array([3.0, 2.0], np.float32)}
    assert training.host_metrics(sums) == [{'loss': 2.0, 'loss_um': 1.0},
                                        {'loss': 0.5, 'loss_um': 0.25}]


def test_each_video_draws_its_own_dropout_from_its_row_in_the_global_batch():
    """Video b's dropout and selection mask come from fold_in(fold_in(rng, step), row[b]):
    the loss of a batch is the sum of one-video forward passes with those keys, and moving a
    video to another row changes its draw (so a device split cannot change any draw)."""
    model, tx, hp, state = setup(dropout=0.7, selection_dropout=0.7)
    batch = make_batch(1)
    step = plain_step(model, tx, hp)
    _, metrics = step(state, batch)
    step_key = jax.random.fold_in(state.rng, state.step)
    expected = 0.0
    for b in range(B):
        key = jax.random.fold_in(step_key, b)
        sel = training.forward(METHOD, model, state.params, batch['features'][b:b + 1], hp=hp,
                               keys=key[None])
        expected += float(METHOD.losses(sel, batch['labels'][b:b + 1], hp=hp)['loss'][0])
    np.testing.assert_allclose(float(metrics['loss']), expected, rtol=1e-5)
    # Explicit rows 0..B-1 are the default; other rows give other draws.
    _, same = step(state, dict(batch, row=np.arange(B, dtype=np.int32)))
    _, moved = step(state, dict(batch, row=np.arange(B, dtype=np.int32) + B))
    assert float(same['loss']) == float(metrics['loss'])
    assert float(moved['loss']) != float(metrics['loss'])


def test_dropout_step_is_deterministic_for_a_seed_and_changes_with_it():
    def run(seed):
        model, tx, hp, state = setup(dropout=0.7, selection_dropout=0.7, seed=seed)
        step = plain_step(model, tx, hp)
        out = []
        for i in range(2):
            state, metrics = step(state, make_batch(i))
            out.append({k: float(v) for k, v in metrics.items()})
        return jax.device_get(state.params), out

    p1, m1 = run(0)
    p2, m2 = run(0)
    chex.assert_trees_all_equal(p1, p2)
    assert m1 == m2
    assert all(np.isfinite(v) for m in m1 for v in m.values())
    p3, m3 = run(1)   # another seed: another init and other dropout draws
    assert m3 != m1
    assert not np.array_equal(p3['embed']['kernel'], p1['embed']['kernel'])


# ---------------------------------------------------------------------------------------------
# The compiled step of the loop: seeds (vmap), devices (shard_map), the device-resident table


def compiled(model, tx, hp, num_devices=1, *, gather=False):
    mesh = training.make_mesh(jax.local_devices()[:num_devices])
    return mesh, training.compile_train_step(METHOD, model, tx, hp, mesh, gather=gather)


def on_mesh(mesh, *trees):
    """State and sums placed as the compiled step returns them (replicated on the mesh)."""
    return jax.device_put(trees, training.replicated(mesh))


def seed_batches(seeds, *, real=B):
    """(S, B, ...) batches: seed s gets make_batch(s)."""
    parts = [make_batch(s, real=real) for s in seeds]
    out = {k: np.stack([p[k] for p in parts]) for k in parts[0]}
    out['row'] = np.tile(np.arange(B, dtype=np.int32), (len(seeds), 1))
    return out


def test_compiled_step_trains_each_seed_as_the_plain_step_would():
    """vmap over seeds: seed s's state after the compiled step equals train_step alone on
    seed s's state and batch; the running sums add up each seed's metrics."""
    model, tx, hp, _ = setup(dropout=0.5, selection_dropout=0.7)
    states = [setup(dropout=0.5, selection_dropout=0.7, seed=s)[3] for s in (0, 1, 2)]
    stacked = training.stack_states(states)
    batch = seed_batches((0, 1, 2), real=6)
    mesh, step_fn = compiled(model, tx, hp)
    new, sums = step_fn(*on_mesh(mesh, stacked, training.zero_metrics(NAMES, 3)), batch, None)
    plain = plain_step(model, tx, hp)
    for s in range(3):
        alone, metrics = plain(states[s], {k: v[s] for k, v in batch.items()})
        chex.assert_trees_all_close(training.unstack_state(new, s).params, alone.params,
                                    rtol=1e-5, atol=1e-6)
        for k in sums:
            np.testing.assert_allclose(sums[k][s], metrics[k], rtol=1e-5)
    assert float(sums['count'][0]) == 6.0


def test_compiled_step_compiles_once_across_steps_and_a_remainder_batch(monkeypatch):
    traces = []

    def counted(*args, **kwargs):
        traces.append(1)
        return original(*args, **kwargs)

    original = training.train_step
    # At most one trace of the step function, whatever the batch contents and step.
    monkeypatch.setattr(training, 'train_step', chex.assert_max_traces(counted, n=1))
    model, tx, hp, state = setup(dropout=0.5, selection_dropout=0.7)
    mesh, step_fn = compiled(model, tx, hp)
    state, sums = on_mesh(mesh, training.stack_states([state]), training.zero_metrics(NAMES, 1))
    for i, real in enumerate([B, B, 3, B, 5]):       # remainder batches carry mask zeros
        state, sums = step_fn(state, sums, seed_batches((i,), real=real), None)
    assert len(traces) == 1 and int(state.step[0]) == 5
    assert float(sums['count'][0]) == B + B + 3 + B + 5
    assert step_fn._cache_size() == 1


def test_gathering_from_the_device_table_equals_host_features():
    """The step on (index into a packed table) equals the step on the gathered features."""
    from wtal_jax.data import pipeline
    rng = np.random.default_rng(0)
    videos = [rng.uniform(0, 2, (n, D)).astype(np.float32) for n in (5, 12, 30, 7)]
    labels = np.eye(C, dtype=np.float32)[[0, 1, 2, 0]]
    batches = pipeline.TrainBatches(videos, labels, num_segments=T, batch_size=B, seed=3)
    table, offsets = pipeline.pack_table(videos)
    host = pipeline.seed_batch([batches], 2, rows=slice(None), offsets=None)
    device = pipeline.seed_batch([batches], 2, rows=slice(None), offsets=offsets)
    np.testing.assert_array_equal(table[device['index']], host['features'])
    model, tx, hp, state = setup(dropout=0.5, selection_dropout=0.7)
    mesh, on_host = compiled(model, tx, hp, gather=False)
    _, on_device = compiled(model, tx, hp, gather=True)
    def start():   # a fresh copy each: the compiled step donates its state
        return on_mesh(mesh, training.stack_states([state]), training.zero_metrics(NAMES, 1))

    a, sa = on_host(*start(), host, None)
    b, sb = on_device(*start(), device, jnp.asarray(table))
    chex.assert_trees_all_equal(a.params, b.params)
    chex.assert_trees_all_equal(sa, sb)


def test_bfloat16_computes_close_to_float32_and_keeps_float32_parameters():
    model, tx, hp, state = setup()
    bf16 = model.clone(dtype=jnp.bfloat16)
    batch = make_batch(0)
    sel32 = training.forward(METHOD, model, state.params, batch['features'], hp=hp,
                             keys=any_keys(B))
    sel16 = training.forward(METHOD, bf16, state.params, batch['features'], hp=hp,
                             keys=any_keys(B))
    assert sel16.p_act.dtype == jnp.float32 and sel16.magnitudes.dtype == jnp.float32
    np.testing.assert_allclose(sel16.magnitudes, sel32.magnitudes, rtol=2e-2)
    assert not np.array_equal(sel16.magnitudes, sel32.magnitudes)   # it did compute in bf16
    new, _ = jax.jit(functools.partial(training.train_step, method=METHOD, module=bf16, tx=tx,
                                       hp=hp))(state, batch)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(new.params))


def test_cls_scale_multiplies_the_classification_loss_by_the_class_count():
    assert cls_scale('1', 200) == 1.0 and cls_scale('classes', 200) == 200.0
    model, tx, hp, state = setup()
    batch = make_batch(0)
    sel = training.forward(METHOD, model, state.params, batch['features'], hp=hp,
                           keys=any_keys(B))
    base = METHOD.losses(sel, batch['labels'], hp=hp)
    # 'classes': the factor is the class count of the labels, C.
    scaled = METHOD.losses(sel, batch['labels'],
                           hp=step_hp(r_act=3, r_bkg=2, selection_dropout=0.0,
                                      cls_scale='classes'))
    np.testing.assert_allclose(scaled['loss_cls'], C * np.asarray(base['loss_cls']), rtol=1e-6)
    np.testing.assert_allclose(scaled['loss'] - scaled['loss_cls'],
                               base['loss'] - base['loss_cls'], rtol=1e-6)


_DEVICES_CHECK = textwrap.dedent("""
    import os, sys
    import jax
    import numpy as np
    sys.path.insert(0, os.environ['TESTS_DIR'])
    from test_training import compiled, seed_batches, setup, B, NAMES
    from wtal_jax import training

    assert jax.local_device_count() == 4, jax.local_devices()

    def run(num_devices):
        model, tx, hp, _ = setup(dropout=0.7, selection_dropout=0.7)
        state = training.stack_states([setup(dropout=0.7, selection_dropout=0.7, seed=s)[3]
                                    for s in (0, 1)])
        mesh, step_fn = compiled(model, tx, hp, num_devices)
        state, sums = jax.device_put((state, training.zero_metrics(NAMES, 2)),
                                     training.replicated(mesh))
        for i in range(3):   # step 1: 3 real videos, so two of four devices hold padding only
            batch = jax.device_put(seed_batches((i, i + 5), real=3 if i == 1 else B),
                                   training.batch_sharding(mesh))
            state, sums = step_fn(state, sums, batch, None)
        return jax.device_get(state), jax.device_get(sums)

    one, s1 = run(1)
    for n in (2, 4):
        many, sn = run(n)
        # Dropout is on: only per-video keys make the device count irrelevant.
        for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(many.params)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
        for a, b in zip(jax.tree.leaves(one.opt_state), jax.tree.leaves(many.opt_state)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)
        for k in s1:
            np.testing.assert_allclose(s1[k], sn[k], rtol=1e-6, err_msg=k)
    assert float(s1["count"][0]) == 2 * B + 3
    print('DEVICES OK')
""")


def test_the_step_on_two_or_four_devices_equals_one_device():
    """In a subprocess: 4 CPU devices must be configured before JAX starts."""
    env = dict(os.environ, JAX_PLATFORMS='cpu',
               XLA_FLAGS='--xla_force_host_platform_device_count=4',
               TESTS_DIR=os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, '-c', _DEVICES_CHECK], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert 'DEVICES OK' in proc.stdout
