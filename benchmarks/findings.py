"""What one benchmark run found: every figure the report shows, in one JSON-serialisable record."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.measurement import Measurement


@dataclass
class ImportFigures:
    """`imeireg import registration FILE`, timed as a subprocess, into a new store; `seconds`
    is the median of the runs timed (`runs`)."""

    rows: int
    seconds: float
    file_bytes: int
    lmdb_bytes: int
    runs: list[float] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


@dataclass
class StorageFigures:
    registered_rows: int  # the registration list: complete and provisional
    lmdb_bytes: int  # data.mdb, every list and the GSMA records
    databases: dict[str, int]  # LMDB pages in use per named database
    server_rss_loaded: int = 0  # after start-up, before any query
    server_rss_warm: int = 0  # after every imeireg run
    server_rss_empty: int = 0  # the same server on an empty store: the interpreter's share
    server_start_seconds: float = 0.0
    redis_bytes: int = 0  # INFO memory used_memory growth from loading the set
    redis_members: int = 0
    postgres_bytes: int = 0  # pg_total_relation_size
    postgres_rows: int = 0


@dataclass
class BaselineFigures:
    """imeireg at an earlier commit, measured on the same store and workload as this tree's;
    its measurements are those named `unary` and `stream`."""

    ref: str  # as given to --baseline
    commit: str  # what it named, abbreviated
    unary: str  # the system names of its measurements
    stream: str


@dataclass
class Findings:
    mode: str
    command: str
    started: str
    machine: dict[str, str]
    settings: dict[str, Any]
    lists: dict[str, int]  # rows per list, as imported
    list_imports: list[dict[str, Any]]  # import_file per list: rows, seconds, rows/s
    generation_seconds: dict[str, float]
    workload_mix: dict[str, float]
    answers_by_kind: dict[str, dict[str, int]]
    truth_disagreements: int
    storage: StorageFigures
    cli_import: ImportFigures | None = None
    measurements: list[Measurement] = field(default_factory=list)
    peers: dict[str, str] = field(default_factory=dict)  # peer → "ok" or why it did not run
    # --baseline: imeireg at another commit, measured beside this tree's (BaselineFigures)
    baseline: BaselineFigures | None = None
    problems: list[str] = field(default_factory=list)

    def find(
        self, system: str, batch_size: int, concurrency: int | None = None
    ) -> Measurement | None:
        for measurement in self.measurements:
            if (
                measurement.system == system
                and measurement.batch_size == batch_size
                and (concurrency is None or measurement.concurrency == concurrency)
            ):
                return measurement
        return None

    def save(self, path: Path) -> None:
        record = asdict(self)
        for measurement in record["measurements"]:
            measurement["histogram"] = measurement["histogram"].decode("ascii")  # HDR's base64
        path.write_text(json.dumps(record, indent=1) + "\n")
