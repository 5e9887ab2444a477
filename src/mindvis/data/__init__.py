"""Datasets that feed the models, with MinD-Vis's preprocessing conventions."""

from mindvis.data.stage_a1 import StageA1Rows, stage_a1_rows

__all__ = ["StageA1Rows", "stage_a1_rows"]
