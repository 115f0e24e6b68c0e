"""From a trained network to numbers (SPEC §5-§6): ``inference`` (compiled forward pass over
test videos, JAX), then ``localization`` (proposals, NMS) and ``evaluation`` (mAP), which are
plain NumPy and never import JAX."""
