"""`JobTracker`: the MLflow run of one pipeline job.

Design rules (README, "Tracking (MLflow)"):
- one run per Snakemake job, named `rule[key=value,...]`, tagged with rule,
  wildcards, dataset, subject, package version and git commit;
- params are the job's config section, flattened with dotted keys;
- a tracking failure (server down, database locked too long, disk full) is
  logged as a warning and tracking is switched off for the rest of the job:
  the job itself carries on and its outputs are written as usual.

With the default SQLite store several jobs run at once (`--cores all`), so
every call into MLflow takes an exclusive file lock beside the database;
SQLite would otherwise answer "database is locked" under concurrent writers,
and concurrent first-time schema creation races.

Every run ends FINISHED, FAILED or KILLED, whatever the job: while a run is open,
SIGTERM raises `JobKilled` where the job is (atomic outputs clean up on the way
out) and the run ends KILLED; Ctrl-C (KeyboardInterrupt) ends it KILLED too.
Training loops install their own SIGTERM handler inside (save a resume file,
then `mark_interrupted`) and restore this one afterwards. A SIGTERM that arrives
while the run is being created or closed waits until that is done. Only SIGKILL
(which no process can catch) leaves a run RUNNING.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mindvis import __version__
from mindvis.tracking import settings
from mindvis.utils.errors import JobKilled
from mindvis.utils.sigterm import SigtermHandler

log = logging.getLogger(__name__)

_MAX_PARAM_LEN = 6000  # MLflow's limit on a param value


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{'a': {'b': 1}} -> {'a.b': '1'}; lists become JSON text."""
    flat: dict[str, str] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            text = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
            flat[name] = text[:_MAX_PARAM_LEN]
    return flat


def git_commit() -> str | None:
    """The commit of the source tree, when it is a git checkout."""
    if os.environ.get("MINDVIS_GIT_COMMIT"):
        return os.environ["MINDVIS_GIT_COMMIT"]
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def run_name_for(rule: str, wildcards: Mapping[str, str]) -> str:
    if not wildcards:
        return rule
    return f"{rule}[{','.join(f'{k}={v}' for k, v in sorted(wildcards.items()))}]"


def file_digest(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            sha.update(block)
    return sha.hexdigest()


class JobTracker:
    """Context manager around one MLflow run. Disabled trackers accept every call and do nothing."""

    def __init__(
        self,
        run_name: str,
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        enabled: bool = True,
        uri: str | None = None,
        experiment: str | None = None,
        config_artifact: Mapping[str, Any] | None = None,
    ):
        self.run_name = run_name
        self.tags = {k: str(v) for k, v in (tags or {}).items()}
        self.params = flatten(params or {})
        self.enabled = enabled
        self.uri = uri or settings.tracking_uri()
        self.experiment = experiment or settings.experiment_name()
        self.config_artifact = config_artifact
        self.run_id: str | None = None
        self._interrupted = False
        self._client = None
        self._lock_path: Path | None = None
        # SIGTERM handling while the run is open (see the module docstring)
        self._sigterm = SigtermHandler(self._on_stop, unless_ignored=True)
        self._stop_mode = "hold"  # "hold": remember a SIGTERM; "raise": raise JobKilled at once
        self._pending_stop: int | None = None
        # a JobKilled raised by the handler, until __exit__ sees it: Python drops an exception
        # raised where it cannot propagate (a weakref callback, __del__), and the stop must not be lost
        self._raised_stop: int | None = None
        self._owner_pid = os.getpid()

    # -- plumbing -------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self._lock_path is None:
            yield
            return
        with open(self._lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _call(self, what: str, fn: Callable[[], Any], attempts: int = 5) -> Any:
        """Run one MLflow call; retry transient failures; on final failure, stop tracking."""
        if not self.enabled:
            return None
        delay = 0.2
        for attempt in range(attempts):
            try:
                with self._locked():
                    return fn()
            except Exception as exc:  # noqa: BLE001 - tracking must never kill the job
                if attempt == attempts - 1:
                    log.warning("MLflow %s failed (%s); tracking is off for the rest of this job", what, exc)
                    self.enabled = False
                    return None
                time.sleep(delay)
                delay *= 2
        return None

    def _start(self) -> None:
        for noisy in ("alembic", "mlflow", "sqlalchemy"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        from mlflow.tracking import MlflowClient

        db = settings.sqlite_path(self.uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
            self._lock_path = db.with_name(db.name + ".lock")

        def create() -> str:
            # Building the client opens the store, which creates or migrates the
            # SQLite schema: that must happen under the lock too.
            self._client = client = MlflowClient(tracking_uri=self.uri)
            exp = client.get_experiment_by_name(self.experiment)
            if exp is None:
                exp_id = client.create_experiment(self.experiment, artifact_location=settings.artifact_root())
            else:
                exp_id = exp.experiment_id
            run = client.create_run(exp_id, run_name=self.run_name, tags=self.tags)
            return run.info.run_id

        self.run_id = self._call("create run", create)
        if self.run_id and self.params:
            self.log_params(self.params)

    # -- SIGTERM while the run is open ---------------------------------------------
    def _catch_stops(self) -> None:
        """Take over SIGTERM (main thread only; not when the process was told to ignore it)."""
        if self._sigterm.taken:
            return
        self._owner_pid = os.getpid()
        self._stop_mode, self._pending_stop = "hold", None
        self._sigterm.take()

    def _on_stop(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._owner_pid:  # a forked worker inherited this handler: end as by default
            SigtermHandler.end_by_default(signum)
            return
        if self._stop_mode == "raise":
            self._stop_mode = "hold"  # a second SIGTERM while the job unwinds waits for the run's end
            self._raised_stop = signum
            raise JobKilled(signum)
        self._pending_stop = self._pending_stop or signum

    def _raise_stops(self) -> None:
        """From now on SIGTERM raises JobKilled; one that arrived meanwhile is raised now."""
        if not self._sigterm.taken:
            return
        self._stop_mode = "raise"
        if self._pending_stop is not None:
            signum, self._pending_stop = self._pending_stop, None
            self._stop_mode = "hold"
            self._raised_stop = signum
            raise JobKilled(signum)

    def _release_stops(self) -> int | None:
        """Give SIGTERM back to whoever had it; return a SIGTERM that was held meanwhile."""
        if not self._sigterm.taken:
            return None
        self._stop_mode = "hold"
        self._sigterm.give_back()
        pending, self._pending_stop = self._pending_stop, None
        return pending

    # -- public API -----------------------------------------------------------
    def __enter__(self) -> JobTracker:
        if self.enabled:
            self._catch_stops()  # a SIGTERM while the run is created waits until it can be recorded
            try:
                self._start()
            except Exception as exc:  # noqa: BLE001
                log.warning("MLflow unavailable (%s); continuing without tracking", exc)
                self.enabled = False
        if not (self.enabled and self.run_id):
            pending = self._release_stops()  # no run to close: a held SIGTERM acts as it would have
            if pending is not None:
                signal.raise_signal(pending)
            return self
        try:
            self._raise_stops()
            log.info("MLflow run %s (%s) at %s", self.run_name, self.run_id, self.uri)
            if self.config_artifact is not None:
                self.log_dict(dict(self.config_artifact), "config.yaml")
        except JobKilled as stop:
            self.__exit__(JobKilled, stop, stop.__traceback__)
            raise
        return self

    def mark_interrupted(self, step: int) -> None:
        """The job stopped on SIGTERM with a resume file: the run ends KILLED, not FINISHED."""
        self._interrupted = True
        self.set_tags({"mindvis.interrupted_at_step": step})

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop_mode = "hold"  # a SIGTERM now waits until the run is closed
        # a JobKilled the handler raised that never reached here was swallowed on the way: still a stop
        lost, self._raised_stop = (self._raised_stop if exc_type is None else None), None
        if lost is not None:
            exc_type, exc, tb = JobKilled, JobKilled(lost), None
            log.warning("SIGTERM arrived where Python could not raise it (%s); the job stops now", exc)
        try:
            stopped = exc_type is not None and issubclass(exc_type, (JobKilled, KeyboardInterrupt))
            status = "FINISHED" if exc_type is None else ("KILLED" if stopped else "FAILED")
            if exc_type is None and self._interrupted:
                status = "KILLED"
            if stopped:
                how = exc.signal_name if isinstance(exc, JobKilled) else "SIGINT"
                self.set_tags({"mindvis.stopped_by": how})
            elif exc_type is not None:
                self.set_tags({"mindvis.error": f"{exc_type.__name__}: {exc}"[:5000]})
            if self.run_id:
                self._call("end run", lambda: self._client.set_terminated(self.run_id, status))
        finally:
            pending = self._release_stops()
        if pending is not None and exc_type is None:
            raise JobKilled(pending)  # held while the run closed; the job's work is done, the run FINISHED
        if lost is not None:
            raise exc

    def log_params(self, params: Mapping[str, Any]) -> None:
        if not self.enabled:  # skip even the mlflow import
            return
        from mlflow.entities import Param

        flat = flatten(params)
        items = [Param(k, v) for k, v in flat.items()]
        for start in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            chunk = items[start : start + 100]
            self._call("log params", lambda c=chunk: self._client.log_batch(self.run_id, params=c))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not self.enabled:  # skip even the mlflow import
            return
        from mlflow.entities import RunTag

        batch = [RunTag(k, str(v)) for k, v in tags.items()]
        self._call("set tags", lambda: self._client.log_batch(self.run_id, tags=batch))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if not self.enabled:  # skip even the mlflow import
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(k, float(v), now, int(step or 0)) for k, v in metrics.items() if v is not None and np.isfinite(v)
        ]
        if batch:
            self._call("log metrics", lambda: self._client.log_batch(self.run_id, metrics=batch))

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        if not self.enabled:  # skip even the mlflow import
            return
        self._call("log artifact", lambda: self._client.log_artifact(self.run_id, str(path), artifact_path))

    def log_dict(self, obj: Any, name: str) -> None:
        """Log a JSON (or YAML, by extension) document as an artifact file."""
        if not self.enabled:
            return
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / name
            if name.endswith((".yaml", ".yml")):
                import yaml

                target.write_text(yaml.safe_dump(obj, sort_keys=False))
            else:
                target.write_text(json.dumps(obj, indent=2, default=str))
            self.log_artifact(target)

    def log_image(self, image: np.ndarray, name: str) -> None:
        """Log a uint8 (H, W[, 3]) array as a PNG artifact."""
        if not self.enabled:
            return
        from PIL import Image

        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / name
            Image.fromarray(np.asarray(image, dtype=np.uint8)).save(target)
            self.log_artifact(target, "images")

    def log_file_reference(self, path: str | os.PathLike, name: str) -> None:
        """Record a large output (checkpoint, npz) by path, size and hash: the file stays on disk."""
        if not self.enabled:
            return
        p = Path(path)
        self.set_tags(
            {
                f"file.{name}.path": str(p.resolve()),
                f"file.{name}.bytes": p.stat().st_size,
                f"file.{name}.sha256": file_digest(p),
            }
        )


def parse_wildcards(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key.strip()] = value.strip()
    return out


def subject_of_npz(path: str | os.PathLike) -> str:
    """The plain subject number of a subject npz (GOD sbj_1, BOLD5000 CSI1, NSD subj01 -> "1"), as the
    DAG's subject wildcard and preprocess tags have it; any other stem as it is."""
    stem = Path(path).stem
    match = re.fullmatch(r"(?:sbj_|CSI|subj)0*(\d+)", stem)
    return match.group(1) if match else stem


def tracker_for(args, section: Any, dataset: str | None = None, subject: str | None = None) -> JobTracker:
    """The tracker of a CLI job: named after `--rule`/`--wildcard` (or the command name).

    `section` is the job's resolved config (a structured config or a dict): it
    becomes the run's params and its `config.yaml` artifact.
    """
    from mindvis.config.loader import to_plain

    wildcards = parse_wildcards(getattr(args, "wildcards", []) or [])
    rule = getattr(args, "rule", None) or args.command.replace("-", "_")
    dataset = dataset or wildcards.get("dataset")
    subject = subject or wildcards.get("subject")
    tags = {
        "mindvis.rule": rule,
        "mindvis.command": args.command,
        "mindvis.wildcards": json.dumps(wildcards, sort_keys=True),
        "mindvis.version": __version__,
    }
    if dataset is not None:
        tags["dataset"] = dataset
    if subject is not None:
        tags["subject"] = str(subject)
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    plain = section if isinstance(section, dict) else to_plain(section)
    return JobTracker(
        run_name=run_name_for(rule, wildcards),
        tags=tags,
        params=plain,
        enabled=not getattr(args, "no_tracking", False),
        config_artifact=plain,
    )
