"""The AWS emulator of the local stack: moto's own server (`python -m hrnb.emulator`), started
with one fidelity fix.

moto runs the function of every Kinesis event source mapping on each put, even when the mapping
is disabled, which AWS never does, by trying to start it in Docker. The local stack creates its
mapping disabled because :mod:`hrnb.esm` runs the function; without this fix every record put
costs a failed Docker attempt and a log line (measured in docs/benchmarks/pipeline.md as most of
the emulator's PutRecords time).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any


class _StreamWithMappings:
    """A view of a moto stream that shows only some of its event source mappings."""

    def __init__(self, stream: Any, mappings: dict[str, Any]) -> None:
        self._stream = stream
        self.lambda_event_source_mappings = mappings

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def honour_disabled_mappings() -> None:
    """Make moto's Kinesis puts invoke only enabled mappings, as AWS does."""
    from moto.kinesis.models import Stream

    original = Stream.put_record

    def put_record(self: Any, partition_key: str, explicit_hash_key: str, data: str) -> Any:
        mappings = self.lambda_event_source_mappings
        enabled = {arn: esm for arn, esm in mappings.items() if getattr(esm, "enabled", True)}
        if len(enabled) == len(mappings):
            return original(self, partition_key, explicit_hash_key, data)
        return original(_StreamWithMappings(self, enabled), partition_key, explicit_hash_key,
                        data)

    Stream.put_record = put_record  # type: ignore[method-assign]


def main(argv: Sequence[str] | None = None) -> None:
    """moto's server command line (``-H HOST -p PORT``), with the fix applied first."""
    honour_disabled_mappings()
    from moto.server import main as moto_main

    moto_main(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
