"""Pair-wise identification, as the evaluation layer names it: a re-export.

The one implementation is `mindvis.metrics.identification` (low in the stack, so stage B
checkpoint selection in `mindvis.training` scores with the same code as the final evaluation
without importing this layer).
"""

from mindvis.metrics.identification import (  # noqa: F401
    PIXEL_HIGHER_IS_BETTER,
    correlation_matrix,
    feature_correlations,
    identification_rates,
    mse,
    mse_matrix,
    pairwise_identification,
    pairwise_pixel_identification,
    pixel_score_matrices,
    score_matrix,
    ssim_colour,
    two_way_identification,
)
