"""UM on ActivityNet 1.3 (I3D features): 200 classes, evaluated on the validation subset.

Reproduces (paper Table 4): mAP@0.5/0.75/0.95 = 37.0 / 23.9 / 5.7, average (0.5:0.95) 23.7.
The same settings as ActivityNet 1.2 (configs/activitynet.py: T = 50 and the evaluation
protocol from the paper, every other value that differs from THUMOS'14 marked UNVERIFIED there,
some chosen by a sweep on an ActivityNet-shaped synthetic set: docs/activitynet.md). Not yet
reproduced here.
Data: the layout of `wtal-jax prepare activitynet` (gt.json, split_training.txt,
split_validation.txt, features/{training,validation}/{rgb,flow}/VIDEO.npy).
Command:
  wtal-jax prepare activitynet --annotations activity_net.v1-3.min.json \
      --features /path/to/features --out /path/to/ActivityNet1.3
  wtal-jax train --config configs/activitynet13.py --workdir runs/anet13 \
      --config.data.root=/path/to/ActivityNet1.3
  wtal-jax evaluate --workdir runs/anet13     # results_validation.json
  wtal-jax detect --checkpoint runs/anet13 --durations activity_net.v1-3.min.json v_ID.npy
"""

from wtal_jax.config import from_file


def get_config():
    return from_file(__file__, 'activitynet.py')   # class_names=(): the 200 v1.3 classes
