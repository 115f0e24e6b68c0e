"""BaS-Net's release state dict (SPEC §8.3) and its Flax parameters, both ways; NumPy only.

  release key                      torch shape      Flax leaf                             Flax shape
  filter_module.conv_1.0.weight    (512, D, 1)      filter_module/conv_1/kernel           (D, 512)
  filter_module.conv_1.0.bias      (512,)           filter_module/conv_1/bias             (512,)
  filter_module.conv_2.0.weight    (1, 512, 1)      filter_module/conv_2/kernel           (512, 1)
  filter_module.conv_2.0.bias      (1,)             filter_module/conv_2/bias             (1,)
  cas_module.conv_1.0.weight       (2048, D, 3)     cas_module/conv_1/kernel              (3, D, 2048)
  cas_module.conv_1.0.bias         (2048,)          cas_module/conv_1/bias                (2048,)
  cas_module.conv_2.0.weight       (2048, 2048, 3)  cas_module/conv_2/kernel              (3, 2048, 2048)
  cas_module.conv_2.0.bias         (2048,)          cas_module/conv_2/bias                (2048,)
  cas_module.conv_3.0.weight       (C+1, 2048, 1)   cas_module/conv_3/kernel              (2048, C+1)

Both ``torch.nn.Conv1d`` and ``lax.conv`` cross-correlate: a k = 3 kernel is a transpose,
``kernel[k, d, e] = weight[e, d, k]``; a k = 1 kernel is a matrix, ``kernel[d, e] = weight[e, d, 0]``.
"""

import numpy as np

from wtal_jax.method import TorchLayout

# (release key, Flax module, Flax leaf, kernel size or 0 for a bias), in the release's order.
_PARAMS = (
    ('filter_module.conv_1.0.weight', 'filter_module', 'conv_1', 1),
    ('filter_module.conv_1.0.bias', 'filter_module', 'conv_1', 0),
    ('filter_module.conv_2.0.weight', 'filter_module', 'conv_2', 1),
    ('filter_module.conv_2.0.bias', 'filter_module', 'conv_2', 0),
    ('cas_module.conv_1.0.weight', 'cas_module', 'conv_1', 3),
    ('cas_module.conv_1.0.bias', 'cas_module', 'conv_1', 0),
    ('cas_module.conv_2.0.weight', 'cas_module', 'conv_2', 3),
    ('cas_module.conv_2.0.bias', 'cas_module', 'conv_2', 0),
    ('cas_module.conv_3.0.weight', 'cas_module', 'conv_3', 1),
)
KEYS = tuple(key for key, *_ in _PARAMS)


def shapes(cfg, num_classes: int) -> dict:
    """Each release tensor's axes: (what sets the size, the size the config gives)."""
    filt = ('model.filter_dim', cfg.model.filter_dim)
    embed = ('model.embed_dim', cfg.model.embed_dim)
    feature = ('data.feature_dim', cfg.data.feature_dim)
    one, three = ('kernel size', 1), ('kernel size', 3)
    return dict(zip(KEYS, (
        (filt, feature, one), (filt,), (('filter outputs', 1), filt, one), (('filter outputs', 1),),
        (embed, feature, three), (embed,), (embed, embed, three), (embed,),
        (('the class count + 1 (data.class_names and the background)', num_classes + 1),
         embed, one))))


def to_params(arrays: dict) -> dict:
    """Release tensors (float32 NumPy, checked shapes) -> ``BaSNet`` params (NumPy)."""
    params: dict = {}
    for key, module, layer, kernel in _PARAMS:
        value = arrays[key]
        if kernel == 0:
            leaf, value = 'bias', value
        elif kernel == 1:
            leaf, value = 'kernel', np.transpose(value[:, :, 0])
        else:
            leaf, value = 'kernel', np.transpose(value, (2, 1, 0))
        params.setdefault(module, {}).setdefault(layer, {})[leaf] = value
    return params


def to_arrays(params) -> dict:
    """``BaSNet`` params -> release tensors as float32 NumPy, in the release's key order."""
    arrays = {}
    for key, module, layer, kernel in _PARAMS:
        leaf = params[module][layer]['bias' if kernel == 0 else 'kernel']
        value = np.asarray(leaf, np.float32)
        if kernel == 1:
            value = np.transpose(value)[:, :, None]
        elif kernel == 3:
            value = np.transpose(value, (2, 1, 0))
        arrays[key] = value
    return arrays


LAYOUT = TorchLayout(keys=KEYS, shapes=shapes, to_params=to_params, to_arrays=to_arrays)
