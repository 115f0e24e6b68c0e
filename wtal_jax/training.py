"""Training any method: optimiser, train state and the pure train step, compiled over devices
and seeds.

The step calls only the method's functions (``wtal_jax.method.Method``): ``segments`` per
video, ``videos`` on the batch, ``losses``; every loss it returns is summed and logged.

``train_step(state, batch) -> (state, metrics)`` is a pure function once its statics are bound
with ``functools.partial``; the only collectives inside are ``pmean``/``psum`` on the named
device axis. Metrics leave as sums plus a video count, so padded videos count correctly.

:func:`compile_train_step` wraps it for the training loop: ``jax.vmap`` over a leading seed axis
(many independent models at once), ``shard_map`` over a one-axis device mesh (each device takes
its rows of the global batch: the per-device program is exactly the step written for ``pmap``,
and a mesh can span the processes of ``jax.distributed``), an optional gather of the features
from a device-resident table, and the running metric sums kept on the device.

Randomness never depends on the device layout: video ``i`` of the global batch draws its
dropout and selection mask from ``fold_in(fold_in(rng, step), i)``, so one device, four devices
or two processes of two devices each train the same model.
"""

import functools
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from wtal_jax import config as config_lib
from wtal_jax import method as method_lib
from wtal_jax.method import Method
from wtal_jax.errors import UserError

AXIS = 'devices'


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training; a pytree, saved whole by the checkpoints.

    In the training loop every leaf carries a leading seed axis S (one model per seed).
    """
    step: jax.Array      # () int32, number of updates done
    params: Any
    opt_state: Any
    rng: jax.Array       # (2,) uint32 raw key; per-step keys are folded from it


def learning_rate_schedule(learning_rate: float, lr_list=()) -> optax.Schedule:
    """Constant rate, or the release's per-step list (update i uses lr_list[i], last one after)."""
    if not lr_list:
        return optax.constant_schedule(learning_rate)
    rates = jnp.asarray(lr_list, jnp.float32)
    return lambda count: rates[jnp.minimum(count, rates.shape[0] - 1)]


def make_optimizer(optim_cfg) -> optax.GradientTransformation:
    """Adam with coupled L2 decay [release]: the decay joins the gradient before the moments.

    That is PyTorch's ``Adam(weight_decay=...)``, not AdamW's decoupled decay.
    """
    return optax.chain(
        optax.add_decayed_weights(optim_cfg.weight_decay),
        optax.scale_by_adam(b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps),
        optax.scale_by_learning_rate(
            learning_rate_schedule(optim_cfg.learning_rate, tuple(optim_cfg.lr_list))))


def create_train_state(model, tx: optax.GradientTransformation, *, seed: int,
                       feature_dim: int, num_segments: int) -> TrainState:
    """Initial parameters (PyTorch's default init) and optimiser state for ``seed``."""
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    dummy = jnp.zeros((1, num_segments, feature_dim), jnp.float32)
    params = model.init(init_key, dummy, train=False)['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=train_key)


def stack_states(states) -> TrainState:
    """S train states -> one whose leaves have a leading seed axis S."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def unstack_state(state: TrainState, index: int) -> TrainState:
    """Seed ``index`` of a stacked state: the leaves without their seed axis."""
    return jax.tree.map(lambda leaf: leaf[index], state)


def video_keys(step_key: jax.Array, rows: jax.Array) -> jax.Array:
    """Per-video keys (B, 2) from the step's key and each video's row in the global batch."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(step_key, rows)


def forward(method: Method, module, params, features: jax.Array, *, hp, keys: jax.Array,
            lengths: jax.Array | None = None):
    """The training pass of ``method`` on features (B, T, D): its ``videos`` outputs.

    ``keys`` (B, 2), one key per video: video b's dropout and the method's own randomness come
    from ``keys[b]`` alone, whatever else is in the batch.
    """
    def one_video(x, key):
        return method.segments(module, params, x, hp=hp, key=key)

    # vmap folds the video axis back into the convolution's batch: one batched conv.
    return method.videos(jax.vmap(one_video)(features, keys), hp=hp, lengths=lengths)


def train_step(state: TrainState, batch: dict, *, method: Method, module,
               tx: optax.GradientTransformation, hp, axis_name: str | None = None
               ) -> tuple[TrainState, dict]:
    """One Adam update on a batch: features (B, T, D), labels (B, C), mask (B,).

    ``batch['row']`` (optional, (B,) int32) is each video's position in the global batch, which
    seeds its dropout and the method's randomness; without it the rows are 0..B-1 (one device).
    Under a device axis (``axis_name`` set) each device holds B/n videos and its loss is its sum
    divided by the mean video count per device, so that ``pmean`` of the gradients is exactly
    the gradient of the global batch mean. Returns the new state and metrics: each of the
    method's losses summed over real videos, plus ``count``.
    """
    count = jnp.sum(batch['mask'])
    norm = count if axis_name is None else jax.lax.pmean(count, axis_name)
    rows = batch.get('row', jnp.arange(batch['mask'].shape[0], dtype=jnp.int32))
    keys = video_keys(jax.random.fold_in(state.rng, state.step), rows)

    def objective(params):
        outputs = forward(method, module, params, batch['features'], hp=hp, keys=keys)
        parts = method.losses(outputs, batch['labels'], hp=hp)
        sums = {name: jnp.sum(value * batch['mask']) for name, value in parts.items()}
        # Only an all-padding batch has norm 0; a mean count per device below 1 is real.
        return sums['loss'] / jnp.where(norm > 0, norm, 1.0), sums

    params = state.params
    if axis_name is not None:
        # Mark the (replicated) parameters as varying over the devices, so that the gradient
        # is each device's own, reduced explicitly below; otherwise shard_map's autodiff sums
        # it over the devices by itself and the pmean would see n times the gradient.
        params = jax.lax.pcast(params, axis_name, to='varying')
    grads, sums = jax.grad(objective, has_aux=True)(params)
    metrics = dict(sums, count=count)
    if axis_name is not None:
        grads = jax.lax.pmean(grads, axis_name)
        metrics = jax.lax.psum(metrics, axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


# ---------------------------------------------------------------------------------------------
# The compiled step of the training loop

def make_mesh(devices) -> Mesh:
    """A one-axis mesh over ``devices`` (all processes' devices under jax.distributed)."""
    return Mesh(np.asarray(devices), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (train state, feature table, metric sums)."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """(S, B, ...) batch arrays split along B over the devices."""
    return NamedSharding(mesh, P(None, AXIS))


def gather_features(batch: dict, table: jax.Array, dtype=jnp.float32) -> dict:
    """Replaces ``batch['index']`` (..., T) int32 rows of ``table`` (N, D) by their features."""
    batch = dict(batch)
    batch['features'] = jnp.take(table, batch.pop('index'), axis=0).astype(dtype)
    return batch


def zero_metrics(names: tuple[str, ...], num_seeds: int) -> dict:
    """Running sums of the step metrics (the method's losses and ``count``), (S,) float32 each:
    the loop's accumulator."""
    return {name: jnp.zeros((num_seeds,), jnp.float32) for name in (*names, 'count')}


def compile_train_step(method: Method, module, tx: optax.GradientTransformation, hp,
                       mesh: Mesh, *, gather: bool):
    """``step(state, sums, batch, table) -> (state, sums)`` over seeds and devices, jit-compiled.

    ``state``: a stacked :class:`TrainState` (leading seed axis S), replicated on the mesh.
    ``batch``: (S, B, ...) arrays split along B over the mesh, with ``index`` (S, B, T) rows of
    ``table`` when ``gather`` (features stay on the device), else ``features`` (S, B, T, D);
    plus labels (S, B, C), mask (S, B) and row (S, B). ``sums``: :func:`zero_metrics`-shaped
    running metric sums, to which this step's are added without a host round trip.
    ``table``: (N, D) replicated features, or None without ``gather``. The state is donated.
    """
    per_seed = jax.vmap(functools.partial(train_step, method=method, module=module, tx=tx,
                                          hp=hp, axis_name=AXIS))

    def body(state, sums, batch, table):
        dtype = module.dtype or jnp.float32
        if gather:
            batch = gather_features(batch, table, dtype)
        else:
            batch = dict(batch, features=batch['features'].astype(dtype))
        state, metrics = per_seed(state, batch)
        return state, jax.tree.map(jnp.add, sums, metrics)

    sharded = jax.shard_map(body, mesh=mesh, in_specs=(P(), P(), P(None, AXIS), P()),
                            out_specs=(P(), P()))
    # Fixed shardings: whatever placement the first state comes with, one program serves all.
    every, rows = replicated(mesh), batch_sharding(mesh)
    return jax.jit(sharded, in_shardings=(every, every, rows, every),
                   out_shardings=(every, every), donate_argnums=(0, 1))


def host_metrics(sums: dict) -> list[dict[str, float]]:
    """Per seed: metric sums divided by the video count, as Python floats."""
    sums = jax.device_get(sums)
    count = np.maximum(np.asarray(sums['count'], np.float64), 1.0)
    names = [k for k in sums if k != 'count']
    return [{k: float(np.asarray(sums[k], np.float64)[s] / count[s]) for k in names}
            for s in range(len(count))]


# ---------------------------------------------------------------------------------------------
# A config's trainable pieces


class Built(NamedTuple):
    """The trainable pieces of a config: its method, network, optimiser, the frozen config
    (``hp``, every method function's statics), the names of the method's losses, and the
    initial train state of every seed, stacked (leading seed axis)."""
    method: Method
    model: object
    tx: object
    hp: object
    losses: tuple[str, ...]
    state: TrainState


def loss_names(method: Method, module, params, hp, *, num_classes: int, feature_dim: int,
               num_segments: int) -> tuple[str, ...]:
    """The names of ``method``'s losses (its ``losses`` dict), found without computing them."""
    def losses(p):
        x = jnp.zeros((1, num_segments, feature_dim), jnp.float32)
        keys = jnp.zeros((1, 2), jnp.uint32)
        out = forward(method, module, p, x, hp=hp, keys=keys)
        return method.losses(out, jnp.zeros((1, num_classes), jnp.float32), hp=hp)
    names = tuple(jax.eval_shape(losses, params))
    if 'loss' not in names:
        raise UserError(f'method {method.name}: its losses give {names}, without '
                        "'loss' (the one minimised)")
    return names


def build(cfg, names: tuple[str, ...]) -> Built:
    """Method, model, optimiser, frozen config, loss names and a fresh stacked train state."""
    method = method_lib.load(cfg.method)
    model = method.model(cfg, len(names))
    tx = make_optimizer(cfg.optim)
    hp = config_lib.frozen(cfg)
    states = [create_train_state(model, tx, seed=seed, feature_dim=cfg.data.feature_dim,
                                 num_segments=cfg.data.num_segments)
              for seed in config_lib.run_seeds(cfg)]
    losses = loss_names(method, model, states[0].params, hp, num_classes=len(names),
                        feature_dim=cfg.data.feature_dim, num_segments=cfg.data.num_segments)
    return Built(method, model, tx, hp, losses, stack_states(states))
