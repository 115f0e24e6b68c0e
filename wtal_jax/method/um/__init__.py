"""UM (Lee, Wang, Lu, Byun, AAAI 2021; SPEC §2-§5): ``models`` (the network), ``selection``
(magnitudes, top-k pseudo segments, video scores) and ``losses`` (the three UM losses)."""
