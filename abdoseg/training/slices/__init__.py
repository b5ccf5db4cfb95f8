"""The 2D (slice-wise) systems: axial-slice data (data), each seed's recipe (recipes), their training loop (train)
and export to a "slices" card (export). The networks themselves are in abdoseg.networks."""
