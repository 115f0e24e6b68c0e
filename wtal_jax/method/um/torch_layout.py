"""UM's release state dict (SPEC §2) and its Flax parameters, both ways; NumPy only.

  release key                       torch shape   Flax leaf                        Flax shape
  cas_module.conv.0.weight          (E, D, 3)     params['embed']['kernel']        (3, D, E)
  cas_module.conv.0.bias            (E,)          params['embed']['bias']          (E,)
  cas_module.classifier.0.weight    (C, E, 1)     params['classifier']['kernel']   (E, C)

Both ``torch.nn.Conv1d`` and ``lax.conv`` cross-correlate (no kernel flip), so
``kernel[k, d, e] = weight[e, d, k]``: a transpose, never a reversal of the taps.
"""

import numpy as np

from wtal_jax.method import TorchLayout

CONV_WEIGHT = 'cas_module.conv.0.weight'
CONV_BIAS = 'cas_module.conv.0.bias'
CLASSIFIER_WEIGHT = 'cas_module.classifier.0.weight'
KEYS = (CONV_WEIGHT, CONV_BIAS, CLASSIFIER_WEIGHT)  # the release's state_dict order


def shapes(cfg, num_classes: int) -> dict:
    """Each release tensor's axes: (what sets the size, the size the config gives)."""
    embed = ('model.embed_dim', cfg.model.embed_dim)
    return {
        CONV_WEIGHT: (embed, ('data.feature_dim', cfg.data.feature_dim), ('kernel size', 3)),
        CONV_BIAS: (embed,),
        CLASSIFIER_WEIGHT: (('the class count (data.class_names)', num_classes), embed,
                            ('classifier kernel size', 1)),
    }


def to_params(arrays: dict) -> dict:
    """Release tensors (float32 NumPy, checked shapes) -> ``UMModel`` params (NumPy)."""
    return {'embed': {'kernel': np.transpose(arrays[CONV_WEIGHT], (2, 1, 0)),
                      'bias': arrays[CONV_BIAS]},
            'classifier': {'kernel': np.transpose(arrays[CLASSIFIER_WEIGHT][:, :, 0])}}


def to_arrays(params) -> dict:
    """``UMModel`` params -> release tensors as float32 NumPy, in the release's key order."""
    kernel = np.asarray(params['embed']['kernel'], np.float32)
    classifier = np.asarray(params['classifier']['kernel'], np.float32)
    return {CONV_WEIGHT: np.transpose(kernel, (2, 1, 0)),
            CONV_BIAS: np.asarray(params['embed']['bias'], np.float32),
            CLASSIFIER_WEIGHT: np.transpose(classifier)[:, :, None]}


LAYOUT = TorchLayout(keys=KEYS, shapes=shapes, to_params=to_params, to_arrays=to_arrays)
