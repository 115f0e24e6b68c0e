"""UM on ActivityNet 1.2 (I3D features), same layout as THUMOS'14 with ActivityNet subsets.

Reproduces (paper Table 2): mAP@0.5/0.75/0.95 = 41.2 / 25.6 / 6.0, average(0.5:0.95) 25.9.
UNVERIFIED: the paper states T = 50 and the evaluation protocol; the authors released no
ActivityNet config, so learning rate, steps, batch size, r_act/r_bkg and the localisation
thresholds below are the THUMOS'14 values or our guesses, marked per line.
Command:
  wtal-jax train --config configs/activitynet12.py --workdir runs/anet12 \
      --config.data.root=/path/to/ActivityNet1.2
"""

from wtal_jax.config import default_config


def get_config():
    c = default_config()
    c.data.class_names = ()                 # derived from the annotations (sorted): 100
    c.data.num_segments = 50                # T = 50 (paper)
    c.data.use_duration = True              # seconds per segment = duration / n
    c.data.train.subset = 'training'
    c.data.train.split_file = 'split_train.txt'
    c.data.test.subset = 'validation'
    c.data.test.split_file = 'split_test.txt'
    c.eval.tiou_thresholds = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.5:0.95
    c.localize.use_duration = True
    c.train.batch_size = 64                 # UNVERIFIED
    c.train.num_steps = 10_000              # UNVERIFIED
    c.model.r_act = 9                       # UNVERIFIED
    c.model.r_bkg = 4                       # UNVERIFIED
    c.optim.learning_rate = 1e-4            # UNVERIFIED
    c.eval.every_steps = 500                # UNVERIFIED (cost: ~4,900 validation videos)
    c.checkpoint.every_steps = 1000
    return c
