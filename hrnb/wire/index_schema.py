"""The OpenSearch side of the wire format: index template for ``heart_rate*`` and the dead-letter
mapping. Stdlib only, packaged into the Lambda zip beside ``hrnb.wire.records``.

Keeps the reference mapping (``timestamp`` date, ``heart_rate`` integer) and types every other
field; replicas are 0 so a single-node cluster is green, not yellow. ``heart_rate`` is null for a
sample read without skin contact and has no ``null_value`` on purpose: such samples are counted,
but every heart-rate aggregation (avg, stats, percentiles, ranges) skips them.
"""

from __future__ import annotations

from typing import Any

#: Fields the pipeline adds to each record on its way in.
PIPELINE_FIELDS = ("kinesis_arrival", "ingested_at", "alert")

HEART_RATE_PROPERTIES: dict[str, Any] = {
    "schema": {"type": "integer"},
    "athlete_id": {"type": "keyword"},
    "session_id": {"type": "keyword"},
    "device_id": {"type": "keyword"},
    "seq": {"type": "long"},
    "timestamp": {"type": "date"},
    "heart_rate": {"type": "integer"},
    "rr_intervals_ms": {"type": "float"},
    "sensor_contact": {"type": "boolean"},
    "energy_expended": {"type": "integer"},
    "sent_at": {"type": "date"},
    "kinesis_arrival": {"type": "date"},
    "ingested_at": {"type": "date"},
    "alert": {"type": "boolean"},
}

DEAD_LETTER_PROPERTIES: dict[str, Any] = {
    "reason": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 512}}},
    "field": {"type": "keyword"},
    "raw_data": {"type": "keyword", "index": False, "doc_values": False},  # base64, as received
    "event_id": {"type": "keyword"},
    "event_source_arn": {"type": "keyword"},
    "shard_id": {"type": "keyword"},
    "partition_key": {"type": "keyword"},
    "sequence_number": {"type": "keyword"},
    "kinesis_arrival": {"type": "date"},
    "dead_lettered_at": {"type": "date"},
}

_SINGLE_NODE_SETTINGS = {"number_of_shards": 1, "number_of_replicas": 0}


def _template(pattern: str, properties: dict[str, Any], priority: int) -> dict[str, Any]:
    return {
        "index_patterns": [pattern],
        "priority": priority,
        "template": {
            "settings": dict(_SINGLE_NODE_SETTINGS),
            "mappings": {"dynamic": "strict", "properties": properties},
        },
    }


def index_template(index_name: str = "heart_rate") -> dict[str, Any]:
    """Composable index template for the heart-rate index, so a bulk write that creates the
    index gets the right mapping even if set-up has not run."""
    return _template(index_name, HEART_RATE_PROPERTIES, 100)


def dead_letter_template(dlq_index_name: str = "heart_rate-dlq") -> dict[str, Any]:
    """Composable index template for the dead-letter index."""
    return _template(dlq_index_name, DEAD_LETTER_PROPERTIES, 101)
