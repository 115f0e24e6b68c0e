"""The UM network (SPEC §2): a temporal-conv embedding and a bias-free segment classifier.

Only modules live here; everything computed from their outputs (magnitudes, top-k selection,
video scores) is a pure function in ``selection.py``.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wtal_jax.method.common import DTYPES, torch_uniform_init


class UMModel(nn.Module):
    """Embedding ``F = relu(conv_k3(X))`` and class activations ``A = W · dropout(F)``.

    Attributes:
      num_classes: C.
      embed_dim: E (``model.embed_dim``).
      dropout_rate: dropout before the classifier, training only (``model.dropout_rate``).
      dtype: the dtype the convolution and classifier compute in (bfloat16 for speed; None:
        that of the inputs and parameters). Parameters stay float32, and outputs of a lower
        precision are returned as float32, so the magnitudes, top-k selection and losses are
        always computed in float32 at least.
    """

    num_classes: int
    embed_dim: int
    dropout_rate: float
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array]:
        """Maps features (B, T, D) to class activations A (B, T, C) and embeddings F (B, T, E).

        Zero "same" padding: the segment at each border sees zeros beyond it, as in PyTorch.
        With ``train=True`` the caller supplies a ``'dropout'`` RNG.
        """
        fan_in = x.shape[-1] * 3
        features = nn.Conv(
            self.embed_dim, kernel_size=(3,), padding=((1, 1),), name='embed',
            dtype=self.dtype, param_dtype=jnp.float32,
            kernel_init=torch_uniform_init(fan_in), bias_init=torch_uniform_init(fan_in))(x)
        features = nn.relu(features)
        hidden = nn.Dropout(self.dropout_rate, deterministic=not train)(features)
        cas = nn.Dense(
            self.num_classes, use_bias=False, name='classifier', dtype=self.dtype,
            param_dtype=jnp.float32, kernel_init=torch_uniform_init(self.embed_dim))(hidden)
        out = jnp.promote_types(cas.dtype, jnp.float32)
        return cas.astype(out), features.astype(out)


def model(cfg, num_classes: int) -> UMModel:
    """``METHOD.model``: the UM network of a config, for ``num_classes`` classes."""
    return UMModel(num_classes=num_classes, embed_dim=cfg.model.embed_dim,
                   dropout_rate=cfg.model.dropout_rate, dtype=DTYPES[cfg.model.dtype])
