"""Constants and small helpers for the Lambda tests (fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hrnb.config import Settings
from hrnb.wire.records import Record, encode_record, make_record

#: Keys the tests sign with; the gateway knows them, the logs must never show them.
ACCESS_KEY = "HRNBTESTKEYID0000001"  # not shaped like an AWS key id: no scanner flags it
SECRET_KEY = "hrnb-test-secret-7f3a9c0e5b"
SESSION_TOKEN = "hrnb-test-session-token-0c5d1e"
ROLE_ARN = "arn:aws:iam::123456789012:role/hrnb-test-indexer"


@dataclass(frozen=True)
class Indices:
    name: str
    dlq: str


@dataclass(frozen=True)
class UnpackedCode:
    """The function zip as the poller keeps it: stored by sha256 in ``state_dir``, unpacked."""

    state_dir: Path
    task_root: Path


def handler_environment(settings: Settings, endpoint: str, indices: Indices,
                        **extra: str) -> dict[str, str]:
    return {
        "OPENSEARCH_ENDPOINT": endpoint,
        "INDEX_NAME": indices.name,
        "DLQ_INDEX_NAME": indices.dlq,
        "HR_ALERT_THRESHOLD": "150",
        "AWS_REGION": settings.region,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
        # As the poller does: the secured stack's endpoints have certificates of the local CA.
        **({"SSL_CERT_FILE": str(settings.local_ca_path)} if settings.local_security else {}),
        **extra,
    }


def good_record(session: str, seq: int, heart_rate: int = 120, *,
                at: datetime | None = None) -> Record:
    return make_record(
        athlete_id="athlete-1", session_id=session, device_id="strap-1", seq=seq,
        timestamp=(at or datetime.now(UTC)) - timedelta(seconds=30) + timedelta(milliseconds=seq),
        heart_rate=heart_rate, rr_intervals_ms=(60000 / heart_rate,), sensor_contact=True,
    )


def encoded(records: Sequence[Record]) -> list[bytes]:
    return [encode_record(record) for record in records]
