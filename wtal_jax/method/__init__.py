"""Methods, one folder each: ``um`` (uncertainty modelling, the seed paper)."""
