"""The embedded default: a synthetic data set in the THUMOS'14 layout, generated if absent.

It exercises the paper's premise (action segments carry class evidence and larger magnitudes;
background comes in several inconsistent modes, some 'dynamic' near actions) at a size that
trains on a 2-core CPU. Time and expected mAP: the README's quick start, measured with this
config and the command below.
Command:
  wtal-jax train --config configs/synthetic.py --workdir runs/synthetic
"""

from wtal_jax.config import default_config


def get_config():
    c = default_config()
    c.synthetic.enabled = True
    c.synthetic.num_train = 200             # like THUMOS'14: 200 training videos
    c.synthetic.num_test = 100
    c.synthetic.num_classes = 5
    c.synthetic.feature_dim = 128           # per stream; D = 256 with both
    c.synthetic.min_segments = 60
    c.synthetic.max_segments = 500
    c.data.root = 'data/synthetic'          # relative to the working directory
    c.data.class_names = ()                 # Class00, Class01, ... from the annotations
    c.data.feature_dim = 2 * c.synthetic.feature_dim
    c.data.num_segments = 256               # T
    c.model.embed_dim = 512                 # E
    c.train.num_steps = 1000
    c.eval.every_steps = 100
    c.checkpoint.every_steps = 100
    return c
