"""The BaS-Net network (SPEC §8.3): a filtering module and one CAS module shared by a base
branch and a background-suppression branch.

Only the module lives here; the video scores, losses and localisation inputs are functions of
its outputs (``wtal_jax.method.basnet``). Convolutions over time with kernel 1 are per-segment
linear maps (``nn.Dense``); PyTorch's default initialisation everywhere (SPEC §8.3).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wtal_jax.method.common import DTYPES, torch_uniform_init


class Filter(nn.Module):
    """Foreground weights ``w = sigmoid(W2 · leaky_relu(W1 x + b1) + b2)``: (B, T, D) -> (B, T).

    model.py: Filter_Module, Conv1d(D, 512, k=1) -> LeakyReLU(0.01) -> Conv1d(512, 1, k=1) ->
    Sigmoid.
    """
    hidden: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        h = nn.Dense(self.hidden, name='conv_1', dtype=self.dtype, param_dtype=jnp.float32,
                     kernel_init=torch_uniform_init(fan_in), bias_init=torch_uniform_init(fan_in))(x)
        h = nn.leaky_relu(h, 0.01)
        w = nn.Dense(1, name='conv_2', dtype=self.dtype, param_dtype=jnp.float32,
                     kernel_init=torch_uniform_init(self.hidden),
                     bias_init=torch_uniform_init(self.hidden))(h)
        return nn.sigmoid(w)[..., 0]


class CAS(nn.Module):
    """Class activations over C + 1 classes (the last: background): (B, T, D) -> (B, T, C + 1).

    model.py: CAS_Module, Conv1d(D, 2048, k=3, pad 1) -> LeakyReLU -> Conv1d(2048, 2048, k=3,
    pad 1) -> LeakyReLU -> Dropout(0.7) -> Conv1d(2048, C + 1, k=1, no bias). ``valid`` (B, T):
    what lies outside is zeroed between the two k = 3 convolutions, so that in a packed chunk
    the second one sees a video's border as the zero padding it sees alone.
    """
    num_classes: int
    embed_dim: int
    dropout_rate: float
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, valid: jax.Array | None = None
                 ) -> jax.Array:
        def conv(features, name, inputs):
            fan_in = inputs.shape[-1] * 3
            return nn.Conv(features, kernel_size=(3,), padding=((1, 1),), name=name,
                           dtype=self.dtype, param_dtype=jnp.float32,
                           kernel_init=torch_uniform_init(fan_in),
                           bias_init=torch_uniform_init(fan_in))(inputs)

        h = nn.leaky_relu(conv(self.embed_dim, 'conv_1', x), 0.01)
        if valid is not None:
            h = h * valid[..., None].astype(h.dtype)
        h = nn.leaky_relu(conv(self.embed_dim, 'conv_2', h), 0.01)
        h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        return nn.Dense(self.num_classes + 1, use_bias=False, name='conv_3', dtype=self.dtype,
                        param_dtype=jnp.float32,
                        kernel_init=torch_uniform_init(self.embed_dim))(h)


class BaSNet(nn.Module):
    """The two branches: ``cas_base = CAS(x)``, ``cas_supp = CAS(w * x)`` with ``w = Filter(x)``.

    One CAS module serves both (shared weights); in training each branch draws its own dropout
    mask. The branches run as one batch of 2B through the CAS module (the same values, one
    pass). ``base=False`` (inference) skips the base branch, which the release computes and
    discards. Outputs of a lower precision are returned as float32.

    Attributes:
      num_classes: C (the CAS module gives C + 1).
      filter_dim, embed_dim, dropout_rate: ``model.*`` of the config.
      dtype: the compute dtype (None: that of the inputs); parameters stay float32.
    """
    num_classes: int
    filter_dim: int
    embed_dim: int
    dropout_rate: float
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, valid: jax.Array | None = None,
                 base: bool = True) -> dict:
        """Features (B, T, D) -> {'weights' (B, T), 'cas_supp' (B, T, C + 1), and with
        ``base`` 'cas_base' (B, T, C + 1)}."""
        weights = Filter(self.filter_dim, dtype=self.dtype, name='filter_module')(x)
        cas = CAS(self.num_classes, self.embed_dim, self.dropout_rate, dtype=self.dtype,
                  name='cas_module')
        suppressed = weights[..., None].astype(x.dtype) * x
        if base:
            both = cas(jnp.concatenate([x, suppressed]), train=train,
                       valid=None if valid is None else jnp.concatenate([valid, valid]))
            cas_base, cas_supp = jnp.split(both, 2)
        else:
            cas_supp = cas(suppressed, train=train, valid=valid)
        out = jnp.promote_types(cas_supp.dtype, jnp.float32)
        outputs = {'weights': weights.astype(out), 'cas_supp': cas_supp.astype(out)}
        if base:
            outputs['cas_base'] = cas_base.astype(out)
        return outputs


def model(cfg, num_classes: int) -> BaSNet:
    """``METHOD.model``: the BaS-Net network of a config, for ``num_classes`` classes."""
    m = cfg.model
    return BaSNet(num_classes=num_classes, filter_dim=m.filter_dim, embed_dim=m.embed_dim,
                  dropout_rate=m.dropout_rate, dtype=DTYPES[m.dtype])
