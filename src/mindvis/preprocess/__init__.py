"""Raw dataset releases -> the npz/npy files MinD-Vis's own code reads.

Each dataset has a library module (pure functions, no CLI, no MLflow) and a
thin `cli_*.py` command module registered in `mindvis.cli.registry`.
"""
