"""The AWS emulator of the local stack: moto's own server (`python -m hrnb.local.emulator`), started
with fidelity fixes.

moto runs the function of every Kinesis event source mapping on each put, even when the mapping
is disabled, which AWS never does, by trying to start it in Docker. The local stack creates its
mapping disabled because :mod:`hrnb.local.poller` runs the function; without this fix every
record put costs a failed Docker attempt and a log line (measured in docs/benchmarks/pipeline.md
as most of
the emulator's PutRecords time).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hrnb.config import Settings
from hrnb.local.code_store import store_local_code


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
        view = _StreamWithMappings(self, enabled)  # duck-types moto's Stream
        return original(view, partition_key, explicit_hash_key, data)  # type: ignore[arg-type]

    Stream.put_record = put_record  # type: ignore[method-assign]


def keep_deployed_code(cache_dir: Path) -> None:
    """Write every function and layer zip moto decodes into the local code store, where the
    poller finds it by the CodeSha256 the emulator reports (moto keeps the code but cannot hand
    it back over its API)."""
    from moto.awslambda import models

    original = models._zipfile_content

    def zipfile_content(zipfile_content: str | bytes) -> tuple[bytes, int, str, str]:
        result = original(zipfile_content)
        store_local_code(cache_dir, result[0])
        return result

    models._zipfile_content = zipfile_content


def main(argv: Sequence[str] | None = None) -> None:
    """moto's server command line (``-H HOST -p PORT``), with the fixes applied first."""
    honour_disabled_mappings()
    keep_deployed_code(Settings.from_env().cache_dir)
    from moto.server import main as moto_main

    moto_main(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
