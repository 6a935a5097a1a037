"""Friendly answers: the client's dataclasses, decoded from the service's columnar messages."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from imeireg.imei import BODY_DIGITS, IMEISV_DIGITS, parse_imei
from imeireg.v1 import legality_pb2 as pb


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the registry says of one IMEI."""

    imei: str
    """The IMEI as given."""
    body: str | None
    """Its 14-digit body, or None when it is not an IMEI in any accepted form."""
    status: str
    """WHITELISTED, GREYLISTED or BLACKLISTED."""
    reasons: tuple[str, ...]
    """The facts behind the status, e.g. ("REGISTERED",), in the API's Reason order."""
    generation: int
    """The registry snapshot the verdict comes from."""


@dataclass(frozen=True, slots=True)
class TacModel:
    """What the registry knows of one TAC (type allocation code, i.e. one device model)."""

    tac: str
    allocated: bool
    barred: bool
    manufacturer: str
    model_name: str
    brand_name: str
    device_type: str
    bands: str
    allocation_date: date | None


@dataclass(frozen=True, slots=True)
class ImportRecord:
    """One committed import of a list file, or a rollback."""

    list_name: str
    """The list, e.g. "registration" or "gsma-tac"; "" for a rollback."""
    mode: str
    """"full", "delta" or "rollback"."""
    file_name: str
    sha256: str
    rows: int
    generation: int
    commit_time: datetime
    added: int = 0
    removed: int = 0
    updated: int = 0
    rolled_back_to: int = 0
    """For a rollback: the generation it undid, with all later ones."""


@dataclass(frozen=True, slots=True)
class RegistryInfo:
    """The registry snapshot the service answers from."""

    schema_version: int
    generation: int
    commit_time: datetime | None
    """When the snapshot was committed (UTC); None before the first import."""
    rows: dict[str, int]
    """Rows per list, e.g. {"registration": 5, ...}, in the API's list order."""
    tac_count: int
    recent_imports: list[ImportRecord]
    """Newest first."""


def _enum_names(enum: Iterable[tuple[str, int]], prefix: str) -> dict[int, str]:
    return {value: name.removeprefix(prefix) for name, value in enum}


_STATUS_NAMES = _enum_names(pb.EquipmentStatus.items(), "EQUIPMENT_STATUS_")
_REASON_NAMES = _enum_names(pb.Reason.items(), "REASON_")
_MODE_NAMES = {k: v.lower() for k, v in _enum_names(pb.ImportMode.items(), "IMPORT_MODE_").items()}
_LIST_NAMES = {
    k: v.lower().replace("_", "-")
    for k, v in _enum_names(pb.RegistryList.items(), "REGISTRY_LIST_").items()
}
_INVALID_FORMAT = 1 << pb.REASON_INVALID_FORMAT
# Few distinct bit sets occur in practice, so decoding each once keeps a
# million-IMEI stream to one dict lookup per IMEI.
_REASONS_BY_BITS: dict[int, tuple[str, ...]] = {}


def reason_names(bits: int) -> tuple[str, ...]:
    """The reason names of a reason bit set (bit k = the Reason numbered k)."""
    names = _REASONS_BY_BITS.get(bits)
    if names is None:
        names = tuple(
            _REASON_NAMES.get(k, str(k)) for k in range(bits.bit_length()) if bits >> k & 1
        )
        _REASONS_BY_BITS[bits] = names
    return names


def _body(imei: str, bits: int) -> str | None:
    """The 14-digit body of an IMEI, which the service flags when it is malformed."""
    if bits & _INVALID_FORMAT:
        return None
    if len(imei) <= IMEISV_DIGITS:  # a body, IMEI or IMEISV: digits, the body first
        return imei[:BODY_DIGITS]
    parsed = parse_imei(imei)  # a 5G PEI
    return parsed.body if parsed else None


def verdicts(imeis: Iterable[str], response: pb.CheckImeisResponse) -> list[Verdict]:
    """The verdicts of a CheckImeis answer, aligned with the IMEIs it was asked about."""
    generation = response.snapshot.generation
    # Bound methods and positional arguments: this loop runs once per IMEI.
    status_name = _STATUS_NAMES.get
    cached_reasons = _REASONS_BY_BITS.get
    return [
        Verdict(
            imei,
            _body(imei, bits),
            # A newer server may send a status or reason this client does not know yet.
            status_name(status) or str(status),
            cached_reasons(bits) or reason_names(bits),
            generation,
        )
        for imei, status, bits in zip(imeis, response.statuses, response.reasons, strict=True)
    ]


def tac_model(info: pb.TacInfo) -> TacModel:
    """The TacModel of a TacInfo message."""
    return TacModel(
        tac=info.tac,
        allocated=info.allocated,
        barred=info.barred,
        manufacturer=info.manufacturer,
        model_name=info.model_name,
        brand_name=info.brand_name,
        device_type=info.device_type,
        bands=info.bands,
        allocation_date=date.fromisoformat(info.allocation_date) if info.allocation_date else None,
    )


def _utc(timestamp: Timestamp) -> datetime:
    return timestamp.ToDatetime(tzinfo=UTC)


def registry_info(response: pb.GetRegistryInfoResponse) -> RegistryInfo:
    """The RegistryInfo of a GetRegistryInfo answer."""
    snapshot = response.snapshot
    return RegistryInfo(
        schema_version=response.schema_version,
        generation=snapshot.generation,
        commit_time=_utc(snapshot.commit_time) if snapshot.HasField("commit_time") else None,
        rows={_LIST_NAMES.get(entry.list, str(entry.list)): entry.rows for entry in response.lists},
        tac_count=response.tac_count,
        recent_imports=[
            ImportRecord(
                list_name=_LIST_NAMES.get(record.list, str(record.list))
                if record.list != pb.REGISTRY_LIST_UNSPECIFIED
                else "",
                mode=_MODE_NAMES.get(record.mode, str(record.mode)),
                file_name=record.file_name,
                sha256=record.sha256,
                rows=record.rows,
                generation=record.generation,
                commit_time=_utc(record.commit_time),
                added=record.added,
                removed=record.removed,
                updated=record.updated,
                rolled_back_to=record.rolled_back_to,
            )
            for record in response.recent_imports
        ],
    )
