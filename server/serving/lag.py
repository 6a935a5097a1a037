"""The event loop's lag: how late a timer fires, the proof that no call waits for a build.

A callback due every `interval` seconds records how late it ran; whatever kept the loop
(a handler, a garbage collection, a thread holding the GIL) shows as lateness. The
worst lateness since the last `take_worst()` is what the benchmark reports around a
generation switch.
"""

from __future__ import annotations

import asyncio

#: How often the probe looks: often enough to see a stall of a few milliseconds, and
#: at about 1 µs a look, no cost worth measuring.
PROBE_INTERVAL = 0.001


class LagProbe:
    """Records how late the running loop fires a timer due every `interval` seconds."""

    def __init__(self, interval: float = PROBE_INTERVAL) -> None:
        self.interval = interval
        self.worst = 0.0
        self.samples = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._due = self._loop.time() + self.interval
        self._handle = self._loop.call_at(self._due, self._fire)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def take_worst(self) -> float:
        """The worst lateness in seconds since the last call, and start again."""
        worst, self.worst = self.worst, 0.0
        return worst

    def _fire(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self.worst = max(self.worst, now - self._due)
        self.samples += 1
        self._due = now + self.interval
        self._handle = self._loop.call_at(self._due, self._fire)
