"""UM on ActivityNet 1.2 (I3D features): 100 classes, evaluated on the validation subset.

Reproduces (paper Table 2): mAP@0.5/0.75/0.95 = 41.2 / 25.6 / 6.0, average (0.5:0.95) 25.9.
The paper states T = 50 and the evaluation protocol; every other value that differs from
THUMOS'14 is set in configs/activitynet.py, marked UNVERIFIED with how it was chosen (the
authors released no ActivityNet config); r_bkg, the localisation threshold ranges and
loss.cls_scale='classes' come from a sweep on an ActivityNet-shaped synthetic set
(docs/activitynet.md). Not yet reproduced here.
Data: the layout of `wtal-jax prepare activitynet` (gt.json, split_training.txt,
split_validation.txt, features/{training,validation}/{rgb,flow}/VIDEO.npy).
Command:
  wtal-jax prepare activitynet --annotations activity_net.v1-2.min.json \
      --features /path/to/features --out /path/to/ActivityNet1.2
  wtal-jax train --config configs/activitynet12.py --workdir runs/anet12 \
      --config.data.root=/path/to/ActivityNet1.2
  wtal-jax evaluate --workdir runs/anet12     # results_validation.json
  wtal-jax detect --checkpoint runs/anet12 --durations activity_net.v1-2.min.json v_ID.npy
"""

from wtal_jax.config import from_file


def get_config():
    return from_file(__file__, 'activitynet.py')   # class_names=(): the 100 v1.2 classes
