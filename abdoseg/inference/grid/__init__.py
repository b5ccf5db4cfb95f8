"""Grids and orientation: a scan's grid and canonical HU voxels (scan), the voxel correspondence between the
full-resolution and the model grid (geometry), and reorientation to the card's orientation and back (orientation).
Numpy only."""
