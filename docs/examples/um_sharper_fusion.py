"""A method of one's own, in one file: UM with a sharper score fusion.

UM localises on ``softmax(A) * u`` (Eq. 3), u the normalised feature magnitude. This variant
fuses with ``u ** 2``: segments of middling magnitude, where action and background are hardest
to tell apart, count less. Everything else (network, losses, the magnitude family) is UM's.

Select it by file: ``wtal-jax train --config configs/synthetic.py --workdir runs/sharper
--config.method=docs/examples/um_sharper_fusion.py`` (docs/adding-a-method.md).
"""

from wtal_jax.method import um
from wtal_jax.method.um import scores as um_scores
from wtal_jax.postprocess.localization import minmax_per_class


def scores(video, *, hp):
    """UM's scores of one video, its fused score computed with u ** 2."""
    base = um_scores.scores(video, hp=hp)
    outputs = um_scores.from_output(video)
    u = um_scores.normalized_magnitude(outputs.magnitudes, outputs.mu_act, outputs.mu_bkg)
    fused = minmax_per_class(outputs.cas_softmax * (u ** 2)[:, None], clip=True)
    return base._replace(scores=fused)


METHOD = um.METHOD._replace(name='um_sharper_fusion', scores=scores)
