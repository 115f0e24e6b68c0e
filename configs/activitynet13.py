"""UM on ActivityNet 1.3 (I3D features): ActivityNet 1.2 settings; 200 classes from the labels.

Reproduces (paper Table 4): mAP@0.5/0.75/0.95 = 37.0 / 23.9 / 5.7, average 23.7.
UNVERIFIED: as for ActivityNet 1.2, every hyper-parameter the paper does not state (see
configs/activitynet12.py) is a guess.
Command:
  wtal-jax train --config configs/activitynet13.py --workdir runs/anet13 \
      --config.data.root=/path/to/ActivityNet1.3
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    'activitynet12', os.path.join(os.path.dirname(__file__), 'activitynet12.py'))
_anet12 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_anet12)


def get_config():
    return _anet12.get_config()   # class_names=() derives the 200 v1.3 classes from gt.json
