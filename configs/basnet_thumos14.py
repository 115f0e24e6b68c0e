"""BaS-Net on THUMOS'14 with I3D features: its authors' release settings (SPEC §8).

Reproduces: BaS-Net (Lee, Uh, Byun, AAAI 2020) as the UM paper's Table 1 quotes it, mAP@0.1:0.7 =
58.2 52.3 44.6 36.0 27.0 18.6 10.4, average (0.1:0.7) 35.3; its release evaluates and selects by
the average over 0.1:0.9 (9 thresholds): every report here gives both averages. The release's
protocol: train on all 200 validation videos for 1,500 steps, evaluate on the test set after
every step, keep the best step (model selection on the test set), seed unset. This config holds
out 20% of the training videos and keeps the step that is best on them
(``checkpoint.select=selection``); its report gives the test numbers at that step, at the last
step and at the best test step (labelled test-set selection). The release's protocol exactly:
  --config.checkpoint.select=test --config.eval.every_steps=1
Everything else is the release's (wtal_jax/method/basnet/config.py): the network (filter 512,
CAS 2048, k = T // 8), alpha 1e-4, Adam 1e-4 with coupled L2 5e-4, batch 16, the step's videos
drawn afresh after the first epoch, T = 750 at test too, class threshold 0.25, thresholds
0:0.225, no minimum proposal length, NMS 0.7.
Data: the THUMOS'14 layout of configs/thumos14.py (the same features as UM).
Hardware and time: one GPU; see BENCHMARKS.md (bench train-step --config this file). Several
seeds at once: --seeds 5.
Command:
  wtal-jax train --config configs/basnet_thumos14.py --workdir runs/basnet_thumos14 \
      --config.data.root=/path/to/THUMOS14
"""

from wtal_jax.config import default_config


def get_config():
    return default_config('basnet')
