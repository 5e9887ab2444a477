"""Errors that tell the user which file is wrong and why.

The CLI catches `MindVisError` and prints its message without a traceback,
so every problem a user can fix (bad input, missing weights, bad config)
should be raised as one of these, never left to fail deep inside numpy.
"""

from __future__ import annotations

from pathlib import Path


class MindVisError(Exception):
    """A problem the user can fix; printed without a traceback by the CLI."""


def one_line(text: str) -> str:
    """`text` with control characters (a damaged file's names can hold newlines) written as escapes,
    so an error stays one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in str(text))


class InputDataError(MindVisError):
    """An input file is missing, unreadable, or holds data we cannot use."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem = one_line(problem)
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}")


class ConfigError(MindVisError):
    """A configuration value is missing or inconsistent."""


class MissingWeightsError(MindVisError):
    """A pretrained weight file named in the config does not exist."""

    def __init__(self, config_key: str, path: str | Path | None, source: str):
        self.config_key = config_key
        self.path = path
        super().__init__(
            f"config key '{config_key}' points at {path!s}, which does not exist. "
            f"This file is not downloaded automatically: {source}"
        )


class JobKilled(BaseException):
    """SIGTERM arrived while a tracked job ran: raised where the job was, so outputs being written
    are cleaned up and the MLflow run ends KILLED. A BaseException, so that no `except Exception`
    on the way swallows it; the CLI turns it into exit code 128 + signal."""

    def __init__(self, signum: int):
        import signal

        self.signum = int(signum)
        try:
            self.signal_name = signal.Signals(self.signum).name
        except ValueError:
            self.signal_name = f"signal {self.signum}"
        super().__init__(f"stopped by {self.signal_name}")
