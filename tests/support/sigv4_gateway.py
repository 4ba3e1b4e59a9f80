"""A gateway in front of the local OpenSearch node that checks SigV4 as Amazon OpenSearch Service
does with IAM access control, and can throttle bulk items the way a busy domain does.

It is a :class:`~support.faultproxy.FaultProxy` (so Refuse, Drop, Delay and Respond faults work
too) whose forwarding step first verifies the request with the local domain endpoint's own check
(:func:`hrnb.local.front.verify_sigv4`), for credentials the test made up instead of the
emulator's. A request that fails any check gets 403 and never reaches the node::

    with SigV4Gateway("http://127.0.0.1:9200", [KnownCredentials(key, secret, token)],
                      region="ap-south-1") as gateway:
        gateway.fail_bulk_items(lambda action, source: source["seq"] % 3 == 0)  # 429 those
        ...  # point the handler's OPENSEARCH_ENDPOINT at gateway.url
        gateway.rejections()  # reasons of the 403s

:class:`BulkThrottlingProxy` is the same without the signature check, for clients whose
credentials the test cannot know (the poller's, assumed from the emulated STS).
Throttled bulk items are taken out of the request before it is forwarded (the node really does
not index them) and put back into the node's answer as 429 ``es_rejected_execution_exception``
items, as OpenSearch reports a full write queue (or, with ``status=400``, as a document the
mapping refuses).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from hrnb.config import Settings
from hrnb.local.front import KnownCredentials, verify_sigv4
from hrnb.provision.state import load_master_user
from support.faultproxy import FaultProxy, RequestInfo

__all__ = ["BulkThrottlingProxy", "KnownCredentials", "SigV4Gateway"]

BulkItemMatcher = Callable[[Mapping[str, Any], Mapping[str, Any] | None], bool]


class BulkThrottlingProxy(FaultProxy):
    """A FaultProxy that can also answer 429 (or another status) for chosen ``_bulk`` items."""

    def __init__(self, target_url: str) -> None:
        super().__init__(target_url)
        self._item_lock = threading.Lock()
        self._item_fault: tuple[BulkItemMatcher, int, int | None] | None = None
        self._items_failed = 0

    def fail_bulk_items(
        self, match: BulkItemMatcher | None, *, status: int = 429, times: int | None = None
    ) -> None:
        """Answer ``status`` for bulk items whose (action metadata, source) ``match`` accepts,
        in at most ``times`` bulk requests that carry such items (None: every one); ``None``
        stops."""
        with self._item_lock:
            self._item_fault = None if match is None else (match, status, times)

    @property
    def items_failed(self) -> int:
        with self._item_lock:
            return self._items_failed

    def forward(
        self, request: RequestInfo, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        if not request.path.split("?")[0].endswith("/_bulk"):
            return super().forward(request, body)
        items = _split_bulk(body)
        with self._item_lock:
            failing: set[int] = set()
            status = 0
            if self._item_fault is not None:
                match, status, times = self._item_fault
                failing = {index for index, (action, source) in enumerate(items)
                           if match(next(iter(action.values())), source)}
                if failing and times is not None:
                    self._item_fault = (match, status, times - 1) if times > 1 else None
            self._items_failed += len(failing)
        if not failing:
            return super().forward(request, body)
        return self._bulk_failing_some(request, items, failing, status)

    def _bulk_failing_some(
        self, request: RequestInfo, items: list[tuple[dict[str, Any], dict[str, Any] | None]],
        failing: set[int], status: int,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        kept = [pair for index, pair in enumerate(items) if index not in failing]
        if self.target_tls is not None:
            request = as_master_user(request)  # the signature covered the items taken out
        answered: Iterator[dict[str, Any]] = iter(())
        headers = [("Content-Type", "application/json; charset=UTF-8")]
        took = 0
        if kept:
            payload = b"".join(
                json.dumps(line).encode() + b"\n" for pair in kept for line in pair
                if line is not None
            )
            code, headers, response = super().forward(request, payload)
            if code != 200:
                return code, headers, response
            node_answer = json.loads(response)
            answered, took = iter(node_answer["items"]), node_answer["took"]
        results = []
        for index, (action, _source) in enumerate(items):
            if index not in failing:
                results.append(next(answered))
                continue
            op_type, meta = next(iter(action.items()))
            error_type = ("es_rejected_execution_exception" if status == 429
                          else "mapper_parsing_exception" if status == 400
                          else "injected_exception")
            results.append({op_type: {
                "_index": meta.get("_index"), "_id": meta.get("_id"), "status": status,
                "error": {"type": error_type, "reason": f"{error_type} injected by the test proxy"},
            }})
        errors = any(next(iter(r.values())).get("status", 200) >= 300 for r in results)
        answer = {"took": took, "errors": errors, "items": results}
        return 200, headers, json.dumps(answer).encode()


class SigV4Gateway(BulkThrottlingProxy):
    """Forwards only requests correctly signed with known credentials; others get 403."""

    def __init__(
        self,
        target_url: str,
        credentials: Iterable[KnownCredentials],
        *,
        region: str,
        service: str = "es",
    ) -> None:
        super().__init__(target_url)
        self.known = {c.access_key: c for c in credentials}
        self.region = region
        self.service = service
        self._gate_lock = threading.Lock()
        self._rejections: list[str] = []
        self._accepted = 0

    def rejections(self) -> list[str]:
        """Why each refused request was refused, in order."""
        with self._gate_lock:
            return list(self._rejections)

    @property
    def accepted(self) -> int:
        with self._gate_lock:
            return self._accepted

    def forward(
        self, request: RequestInfo, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        _, reason = verify_sigv4(request, self.known.get, region=self.region,
                                 service=self.service)
        with self._gate_lock:
            if reason is None:
                self._accepted += 1
            else:
                self._rejections.append(reason)
        if reason is not None:
            return 403, [("Content-Type", "application/json")], json.dumps(
                {"message": reason}).encode()
        if self.target_tls is not None:
            # Behind this gateway the test's made-up identity may do anything.
            request = as_master_user(request)
        return super().forward(request, body)


def as_master_user(request: RequestInfo) -> RequestInfo:
    """The request as the secured local stack's master user (basic auth passes the front):
    for requests whose signature cannot hold (a body the proxy changed) or whose signer the
    front does not know (a test's made-up keys)."""
    master = load_master_user(Settings.from_env())
    assert master is not None, "the secured local stack has a master user file"
    token = base64.b64encode(f"{master.username}:{master.password}".encode()).decode()
    headers = {k: v for k, v in request.headers.items()
               if k != "authorization" and not k.startswith("x-amz-")}
    headers["authorization"] = f"Basic {token}"
    return dataclasses.replace(request, headers=headers)


def _split_bulk(body: bytes) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """NDJSON bulk body -> (action, source) pairs (delete actions have no source)."""
    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
    items = []
    position = 0
    while position < len(lines):
        action = lines[position]
        if "delete" in action:
            items.append((action, None))
            position += 1
        else:
            items.append((action, lines[position + 1]))
            position += 2
    return items
