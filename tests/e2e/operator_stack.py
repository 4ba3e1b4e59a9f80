"""Operator actions on a local stack, as a new user performs them: set-up, teardown, streaming
(``run_stream``, what ``hrnb stream`` runs), a poller following every prefix of its state
directory as ``hrnb local up`` starts it, and, on a private stack, service restarts.

Shared by the reproductions of issue #12 (``test_operator.py``) and the stateful randomized test
(``test_operator_invariant.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path
from typing import Any

from e2e_helpers import Key, PollerProcess, say
from opensearchpy import helpers
from support import admin_opensearch, free_port, wait_until

from hrnb import provision
from hrnb.config import Settings
from hrnb.local import launcher
from hrnb.provision.function import local_trigger_reading
from hrnb.stream.session import StreamOptions, StreamSummary, run_stream


class OperatorStack:
    """Prefixes set up with one state directory and the poller that serves them all."""

    def __init__(self, base: Settings, artifacts: provision.LambdaArtifacts, home: Path) -> None:
        self.base = base.with_overrides(state_dir=home / "state", index_name="",
                                        dlq_index_name="")
        self.artifacts = artifacts
        self.home = home
        self.poller = PollerProcess(self.base, home / "esm.log", every_prefix=True)
        self.prefixes: set[str] = set()

    def settings(self, prefix: str, **overrides: Any) -> Settings:
        return self.base.with_overrides(prefix=prefix, **overrides)

    def setup(self, own: Settings) -> provision.SetupReport:
        self.prefixes.add(own.prefix)
        return provision.setup(own, self.artifacts)

    def teardown(self, own: Settings) -> provision.TeardownReport:
        return provision.teardown(own)

    def stream(self, own: Settings, *, athletes: int = 1, seconds: float = 3, seed: int = 1,
               verify: bool = True, verify_timeout_s: float = 30.0,
               flush_timeout_s: float = 10.0, client: Any = None) -> StreamSummary:
        """``hrnb stream --athletes N --duration S --speed max`` into ``own``'s stream."""
        options = StreamOptions(source="simulated", duration_s=seconds, athletes=athletes,
                                speed=None, seed=seed, flush_timeout_s=flush_timeout_s,
                                spool_path=self.home / f"spool-{own.prefix}.sqlite3",
                                verify=verify, verify_timeout_s=verify_timeout_s)
        return asyncio.run(run_stream(options, own, client=client))

    def keys(self, own: Settings, *, index: str | None = None) -> Counter[Key]:
        """Every heart-rate document of the index (or alias), counted by identity."""
        client = admin_opensearch(own)
        name = index or own.index_name
        if not client.indices.exists(index=name):
            return Counter()
        client.indices.refresh(index=name)
        hits = helpers.scan(client, index=name, query={"query": {"match_all": {}}},
                            _source=["athlete_id", "session_id", "seq"])
        return Counter((h["_source"]["athlete_id"], h["_source"]["session_id"],
                        int(h["_source"]["seq"])) for h in hits)

    def wait_reading(self, own: Settings, timeout_s: float = 60.0) -> None:
        uuid = next(iter(provision.AwsClients(own).lambda_.list_event_source_mappings(
            FunctionName=own.function_name)["EventSourceMappings"]))["UUID"]
        wait_until(lambda: local_trigger_reading(own, uuid), timeout_s=timeout_s,
                   what=f"the poller reading {own.prefix}'s trigger")

    def close(self) -> None:
        self.poller.stop()
        for prefix in sorted(self.prefixes):
            with contextlib.suppress(Exception):
                provision.teardown(self.settings(prefix), wait=False)


class PrivateServices:
    """An emulator and an OpenSearch node of the test's own (free ports, own state directory),
    so the test may stop and start them; ``settings`` points at them."""

    def __init__(self, base: Settings, home: Path, aws_port: int, opensearch_port: int) -> None:
        # A free port of its own for a secured node too: the one after the front's may be taken.
        self.settings = base.with_overrides(aws_port=aws_port, opensearch_port=opensearch_port,
                                            opensearch_node_port=free_port(),
                                            aws_endpoint_url=None, opensearch_url=None,
                                            state_dir=home / "services")

    def up(self) -> None:
        launcher.up(self.settings, poller=False, progress=say)

    def restart(self, service: str) -> None:
        say(f"restarting {service}")
        launcher.down(self.settings, only=(service,))
        launcher.up(self.settings, poller=False)

    def down(self) -> None:
        launcher.down(self.settings, only=(launcher.AWS, launcher.OPENSEARCH))
