"""One measured run: how many IMEIs a system answered, how fast, and the latency of each call."""

from __future__ import annotations

from dataclasses import dataclass, field

from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

# Latencies are recorded in microseconds, from 1 µs to 60 s, to 3 significant digits.
LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_DIGITS = 3
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


@dataclass
class Measurement:
    """Calls, IMEIs and latencies of one system at one batch size, summed over client processes.

    `histogram` is HDR-encoded (base64 bytes) so that it crosses process boundaries.
    """

    system: str
    batch_size: int
    concurrency: int
    processes: int
    calls: int = 0
    imeis: int = 0
    seconds: float = 0.0
    client_cpu_seconds: float = 0.0  # CPU the client processes used in the measured window
    errors: int = 0
    first_error: str = ""
    verified: int = 0  # sampled answers compared with the expected ones
    mismatches: int = 0
    histogram: bytes = b""
    notes: list[str] = field(default_factory=list)

    @property
    def imeis_per_second(self) -> float:
        return self.imeis / self.seconds if self.seconds else 0.0

    @property
    def client_cpu_share(self) -> float:
        """Client CPU per second of the window, per client process: near 1.0, the client limits."""
        return self.client_cpu_seconds / self.seconds / self.processes if self.seconds else 0.0

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def latencies_ms(self) -> dict[float, float]:
        """Per-call latency at each of PERCENTILES, in milliseconds."""
        histogram = self.decoded()
        return {p: histogram.get_value_at_percentile(p) / 1000 for p in PERCENTILES}

    def decoded(self) -> HdrHistogram:
        return HdrHistogram.decode(self.histogram) if self.histogram else new_histogram()

    def add(self, other: Measurement) -> None:
        """Fold in another client process's share of the same run."""
        self.calls += other.calls
        self.imeis += other.imeis
        self.seconds = max(self.seconds, other.seconds)
        self.client_cpu_seconds += other.client_cpu_seconds
        self.errors += other.errors
        self.first_error = self.first_error or other.first_error
        self.verified += other.verified
        self.mismatches += other.mismatches
        histogram = self.decoded()
        histogram.add(other.decoded())
        self.histogram = histogram.encode()
