"""Training: optimiser, train state and the pure train step, jit-compiled or pmapped (SPEC §4).

``train_step(state, batch) -> (state, metrics)`` is a pure function once its statics are bound
with ``functools.partial``; the only collectives inside are ``pmean``/``psum`` on the named
device axis. Metrics leave as sums plus a video count, so padded videos count correctly.
"""

import dataclasses
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from wtal_jax.method import losses, selection
from wtal_jax.method.models import UMModel

AXIS = 'devices'


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training; a pytree, saved whole by the checkpoints."""
    step: jax.Array      # () int32, number of updates done
    params: Any
    opt_state: Any
    rng: jax.Array       # (2,) uint32 raw key; per-step keys are folded from it


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """The static hyper-parameters of one training step (hashable, bound before jit)."""
    r_act: int = 9
    r_bkg: int = 4
    selection_dropout: float = 0.7
    margin: float = 100.0
    alpha: float = 5e-4
    beta: float = 1.0
    cls_variant: str = 'release'
    be_variant: str = 'release'

    @classmethod
    def from_config(cls, cfg) -> 'StepConfig':
        return cls(r_act=cfg.model.r_act, r_bkg=cfg.model.r_bkg,
                   selection_dropout=cfg.model.selection_dropout, margin=cfg.loss.margin,
                   alpha=cfg.loss.alpha, beta=cfg.loss.beta, cls_variant=cfg.loss.cls_variant,
                   be_variant=cfg.loss.be_variant)


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


def make_model(cfg, num_classes: int) -> UMModel:
    """The UM network for a config and a class count."""
    return UMModel(num_classes=num_classes, embed_dim=cfg.model.embed_dim,
                   dropout_rate=cfg.model.dropout_rate)


def create_train_state(model: UMModel, tx: optax.GradientTransformation, *, seed: int,
                       feature_dim: int, num_segments: int) -> TrainState:
    """Initial parameters (PyTorch's default init) and optimiser state for ``seed``."""
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    dummy = jnp.zeros((1, num_segments, feature_dim), jnp.float32)
    params = model.init(init_key, dummy, train=False)['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=train_key)


def forward(model: UMModel, params, features: jax.Array, *, hp: StepConfig,
            key: jax.Array | None = None, lengths: jax.Array | None = None
            ) -> selection.Selection:
    """Network plus selection. With ``key`` it is the training pass (dropout and mask)."""
    if key is None:
        cas, feats = model.apply({'params': params}, features, train=False)
        return selection.select(cas, selection.feature_magnitudes(feats), features=feats,
                                r_act=hp.r_act, r_bkg=hp.r_bkg, lengths=lengths)
    drop_key, mask_key = jax.random.split(key)
    cas, feats = model.apply({'params': params}, features, train=True,
                             rngs={'dropout': drop_key})
    mask = selection.selection_mask(mask_key, cas.shape[:2], hp.selection_dropout)
    return selection.select(cas, selection.feature_magnitudes(feats), features=feats,
                            r_act=hp.r_act, r_bkg=hp.r_bkg, mask=mask, lengths=lengths)


def per_video_losses(sel: selection.Selection, labels: jax.Array, hp: StepConfig
                     ) -> dict[str, jax.Array]:
    """The three losses and their weighted total, each (B,)."""
    cls = losses.classification_loss(p_act=sel.p_act, labels=labels, variant=hp.cls_variant)
    um = losses.uncertainty_loss(feat_act=sel.feat_act, feat_bkg=sel.feat_bkg, margin=hp.margin)
    be = losses.background_entropy_loss(p_bkg=sel.p_bkg, bkg_softmax=sel.bkg_softmax,
                                        variant=hp.be_variant)
    total = losses.total_loss(cls=cls, um=um, be=be, alpha=hp.alpha, beta=hp.beta)
    return {'loss': total, 'loss_cls': cls, 'loss_um': um, 'loss_be': be}


def train_step(state: TrainState, batch: dict, *, model: UMModel,
               tx: optax.GradientTransformation, hp: StepConfig,
               axis_name: str | None = None) -> tuple[TrainState, dict]:
    """One Adam update on a batch: features (B, T, D), labels (B, C), mask (B,).

    Under ``pmap`` (``axis_name`` set) each device holds B/n videos: its dropout keys are folded
    with the device index, and its loss is its sum divided by the mean video count per device,
    so that ``pmean`` of the gradients is exactly the gradient of the global batch mean.
    Returns the new state and metrics as sums over real videos plus ``count``.
    """
    key = jax.random.fold_in(state.rng, state.step)
    count = jnp.sum(batch['mask'])
    norm = count
    if axis_name is not None:
        key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
        norm = jax.lax.pmean(count, axis_name)

    def objective(params):
        sel = forward(model, params, batch['features'], hp=hp, key=key)
        parts = per_video_losses(sel, batch['labels'], hp)
        sums = {name: jnp.sum(value * batch['mask']) for name, value in parts.items()}
        return sums['loss'] / jnp.maximum(norm, 1.0), sums

    grads, sums = jax.grad(objective, has_aux=True)(state.params)
    metrics = dict(sums, count=count)
    if axis_name is not None:
        grads = jax.lax.pmean(grads, axis_name)
        metrics = jax.lax.psum(metrics, axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def compile_train_step(model: UMModel, tx: optax.GradientTransformation, hp: StepConfig,
                       num_devices: int):
    """The step for ``num_devices`` local devices: ``jit`` for one, ``pmap`` for more.

    The pmapped step takes the state unmapped (``in_axes=None``) and a batch already split to
    (num_devices, B / num_devices, ...) by :func:`shard_batch`; the new state leaves unmapped.
    """
    if num_devices == 1:
        return jax.jit(functools.partial(train_step, model=model, tx=tx, hp=hp),
                       donate_argnums=(0,))
    step = functools.partial(train_step, model=model, tx=tx, hp=hp, axis_name=AXIS)
    return jax.pmap(step, axis_name=AXIS, in_axes=(None, 0), out_axes=(None, None),
                    devices=jax.local_devices()[:num_devices])


def shard_batch(batch: dict, num_devices: int) -> dict:
    """Reshapes every (B, ...) array to (num_devices, B / num_devices, ...); B must divide."""
    if num_devices == 1:
        return batch
    size = next(iter(batch.values())).shape[0]
    if size % num_devices:
        raise ValueError(f'batch size {size} does not divide {num_devices} devices')
    return {k: np.reshape(v, (num_devices, size // num_devices) + v.shape[1:])
            for k, v in batch.items()}


def host_metrics(metrics: dict) -> dict[str, float]:
    """Sums over videos divided by the video count, as Python floats."""
    metrics = jax.device_get(metrics)
    count = max(float(metrics['count']), 1.0)
    return {k: float(v) / count for k, v in metrics.items() if k != 'count'}
