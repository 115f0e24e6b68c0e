"""UM on THUMOS'14 with I3D features: the authors' release settings (SPEC §1-§6).

Reproduces: Table 1 of Lee et al. (AAAI 2021), mAP@0.1:0.7 = 67.5 61.2 52.3 43.4 33.7 22.9 12.1,
average 41.9. The paper's number comes from the release's protocol: train on all 200 validation
videos, evaluate on the test set after every step and keep the best step (model selection on the
test set). This config instead holds out 20% of the training videos and keeps the step that is
best on them (``checkpoint.select=selection``), and its report gives the test numbers at that
step, at the last step and at the best test step (labelled test-set selection). The release's
protocol exactly:
  --config.checkpoint.select=test --config.eval.every_steps=1
Data: ROOT/gt.json, split_{train,test}.txt, features/{train,test}/{rgb,flow}/VIDEO.npy (the
release's layout; `wtal-jax prepare thumos14` builds it from other releases).
Hardware and time: one GPU; see BENCHMARKS.md. Several seeds at once: --seeds 5.
Command:
  wtal-jax train --config configs/thumos14.py --workdir runs/thumos14 \
      --config.data.root=/path/to/THUMOS14
"""

from wtal_jax.config import default_config


def get_config():
    return default_config()
