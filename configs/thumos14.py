"""UM on THUMOS'14 with I3D features: the authors' release settings (SPEC §1-§6).

Reproduces: Table 1 of Lee et al. (AAAI 2021), mAP@0.1:0.7 = 67.5 61.2 52.3 43.4 33.7 22.9 12.1,
average 41.9 (the release selects the best step on the test set, evaluating after every step;
``--config.eval.every_steps=1`` does exactly that, the default 100 is 100x cheaper).
Data: ROOT/gt.json, split_{train,test}.txt, features/{train,test}/{rgb,flow}/VIDEO.npy.
Hardware and time: one GPU; about 0.1 s per step on an H100 (see BENCHMARKS.md).
Command:
  wtal-jax train --config configs/thumos14.py --workdir runs/thumos14 \
      --config.data.root=/path/to/THUMOS14
"""

from wtal_jax.config import default_config


def get_config():
    return default_config()
