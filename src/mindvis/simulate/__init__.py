"""Simulated raw data for the embedded demo.

`stimuli` builds the image set (scikit-learn digits or a user folder), `voxels`
is the shared encoding model (images -> voxel responses, resting-state
fluctuations), and one module per dataset writes that dataset's REAL raw
release format, so the preprocessing that runs in the demo is the one that
runs on real data.
"""
