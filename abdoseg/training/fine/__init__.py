"""Training of the GPU fine stage's network (abdoseg.inference.fine): crops around the organs of the real scans,
resampled by the fine stage's own preprocessing, patches, Dice + cross-entropy. Import-light: torch loads in
the submodules."""
