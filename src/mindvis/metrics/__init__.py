"""Metrics that several layers share, kept low in the stack (numpy only, no mindvis imports above utils).

Pair-wise identification is scored by the final evaluation AND by stage B checkpoint selection
during training. The layers import downward only (data -> models -> training -> generation ->
evaluation -> report), so training may not import `mindvis.evaluation`; the one implementation
therefore lives here, below training, and `mindvis.evaluation.identification` re-exports it.
A new metric that training or generation needs goes here; one only the final evaluation
needs goes in `mindvis.evaluation`.
"""
