"""The method (SPEC §2-§4): ``models`` (the network), ``selection`` (magnitudes, top-k pseudo
segments, video scores), ``losses`` (the three UM losses) and ``train`` (optimiser, train state,
the pure step). Pure JAX functions; nothing here touches files."""
