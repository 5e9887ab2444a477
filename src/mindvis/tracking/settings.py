"""Where runs go: tracking URI and artifact root, and their precedence.

Precedence for the URI: the `MLFLOW_TRACKING_URI` environment variable, then
the config (the Snakefile exports `tracking.uri` into the environment when the
variable is unset), then the default `sqlite:///results/mlflow.db`: a file,
nothing to start. Artifacts go under `results/mlartifacts` unless
`MINDVIS_ARTIFACT_ROOT` says otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_TRACKING_URI = "sqlite:///results/mlflow.db"
DEFAULT_ARTIFACT_ROOT = "results/mlartifacts"
DEFAULT_EXPERIMENT = "mindvis"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def experiment_name() -> str:
    return os.environ.get("MINDVIS_EXPERIMENT") or DEFAULT_EXPERIMENT


def artifact_root() -> str | None:
    """Where a new experiment stores artifacts; None lets a tracking server decide.

    With an http(s) tracking URI and no MINDVIS_ARTIFACT_ROOT, the server's own
    root (`--artifacts-destination`, proxied as `mlflow-artifacts:`) is used:
    a local default would be a path on whichever node created the experiment.
    """
    root = os.environ.get("MINDVIS_ARTIFACT_ROOT")
    if not root:
        if tracking_uri().startswith(("http://", "https://")):
            return None
        root = DEFAULT_ARTIFACT_ROOT
    if "://" in root:
        return root
    return Path(root).resolve().as_uri()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (relative to the working directory)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    return Path(uri[len(prefix):])
