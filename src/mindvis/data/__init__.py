"""Datasets that feed the models, with MinD-Vis's preprocessing conventions."""
