"""`SigtermHandler`: the one place in mindvis that installs a signal handler.

Two owners take SIGTERM for a while and give it back: a tracked job (mindvis.tracking:
the MLflow run ends KILLED) and, inside it, the training loop (mindvis.training.engine:
save a resume file, then stop). Each wraps its own callback in a SigtermHandler, so
taking over and restoring the previous handler is written once.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any


class SigtermHandler:
    """Calls `on_sigterm(signum, frame)` on SIGTERM between `take()` and `give_back()` (or inside `with`).

    Only the main thread can install a handler (Python runs handlers there): elsewhere
    `take()` does nothing. With `unless_ignored`, a process told to ignore SIGTERM keeps
    ignoring it. `give_back()` restores the handler that was there before.
    """

    def __init__(self, on_sigterm: Callable[[int, Any], None], unless_ignored: bool = False):
        self.on_sigterm = on_sigterm
        self.unless_ignored = unless_ignored
        self.taken = False
        self._previous: Any = None

    def take(self) -> bool:
        """Install the callback; True when it is installed."""
        if self.taken or threading.current_thread() is not threading.main_thread():
            return self.taken
        previous = signal.getsignal(signal.SIGTERM)
        if self.unless_ignored and previous is signal.SIG_IGN:
            return False
        self._previous = previous
        signal.signal(signal.SIGTERM, self.on_sigterm)
        self.taken = True
        return True

    def give_back(self) -> None:
        if not self.taken:
            return
        self.taken = False
        # None: the handler before was not set from Python (none is, by default): the default action
        signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)

    def __enter__(self) -> SigtermHandler:
        self.take()
        return self

    def __exit__(self, *exc) -> None:
        self.give_back()

    @staticmethod
    def end_by_default(signum: int) -> None:
        """End this process as the signal's default action would (a forked worker that inherited a handler)."""
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
