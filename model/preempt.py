"""Stop requests from the cluster: Kubernetes evictions, Slurm preemption and spot reclaims send SIGTERM and
wait a grace period, Slurm can send SIGUSR1 before the time limit (`--signal=USR1@120`), a user presses
Ctrl-C (SIGINT). The trainers install `StopRequest` and look at it between optimiser steps: the step in
flight finishes, a checkpoint of it is written, the process group is left and the process exits 0."""
from __future__ import annotations

import signal
import sys

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class StopRequest:
    """Records the first stop signal instead of dying; a second SIGINT interrupts at once (a user who
    really means it). `install()` (idempotent) until `uninstall()`, or use it as a context manager; the
    previous handlers come back after."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def __bool__(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signal_name is None:
            self.signal_name = name
            print(f"{name} received: finishing the current step, then a checkpoint and exit", file=sys.stderr,
                  flush=True)

    def install(self) -> "StopRequest":
        if not self._previous:
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def uninstall(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def __enter__(self) -> "StopRequest":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.uninstall()
