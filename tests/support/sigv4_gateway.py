"""A gateway in front of the local OpenSearch node that checks SigV4 as Amazon OpenSearch Service
does with IAM access control, and can throttle bulk items the way a busy domain does.

It is a :class:`~support.faultproxy.FaultProxy` (so Refuse, Drop, Delay and Respond faults work
too) whose forwarding step first verifies the request: the signature is recomputed with botocore's
SigV4 code for credentials the gateway knows, and the date (at most 5 minutes off), the scope
(region, service ``es``), the session token and the payload hash are checked. A request that
fails any check gets 403 and never reaches the node::

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

import hashlib
import hmac
import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials

from support.faultproxy import FaultProxy, RequestInfo

MAX_CLOCK_SKEW = timedelta(minutes=5)
_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9;_.-]+), ?"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)

BulkItemMatcher = Callable[[Mapping[str, Any], Mapping[str, Any] | None], bool]


@dataclass(frozen=True)
class KnownCredentials:
    """Credentials the gateway accepts (an IAM user's keys, or a role session's with token)."""

    access_key: str
    secret_key: str
    session_token: str | None = None


class _Signer(SigV4Auth):
    """botocore's SigV4 with the signed headers taken from the request's Authorization."""

    def __init__(self, credentials: Credentials, service: str, region: str,
                 signed_headers: list[str]) -> None:
        super().__init__(credentials, service, region)
        self._signed_headers = signed_headers

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        selected = HTTPHeaders()
        for name in self._signed_headers:
            selected[name] = request.headers[name]
        return selected


def rejection_reason(
    request: RequestInfo,
    known: Mapping[str, KnownCredentials],
    *,
    region: str,
    service: str = "es",
    now: datetime | None = None,
) -> str | None:
    """Why Amazon OpenSearch Service would answer 403 to this request, or None if it is signed."""
    now = now or datetime.now(UTC)
    headers = request.headers  # lower-case names
    match = _AUTH_RE.match(headers.get("authorization", ""))
    if match is None:
        return "missing or malformed SigV4 Authorization header"
    credentials = known.get(match["key"])
    if credentials is None:
        return "the security token included in the request is invalid (unknown access key)"
    if (match["region"], match["service"]) != (region, service):
        return f"credential scope is {match['region']}/{match['service']}, not {region}/{service}"
    amz_date = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "missing or malformed X-Amz-Date"
    if amz_date[:8] != match["date"]:
        return "credential scope date differs from X-Amz-Date"
    if abs(now - signed_at) > MAX_CLOCK_SKEW:
        return f"signature expired: signed at {amz_date}, now {now:%Y%m%dT%H%M%SZ}"
    signed = match["signed"].split(";")
    for required in ("host", "x-amz-date"):
        if required not in signed:
            return f"{required} is not among the signed headers"
    missing = [name for name in signed if name not in headers]
    if missing:
        return f"signed header(s) missing from the request: {', '.join(missing)}"
    if credentials.session_token is not None and (
        headers.get("x-amz-security-token") != credentials.session_token
        or "x-amz-security-token" not in signed
    ):
        return "the session token is missing, wrong or unsigned"
    body_hash = hashlib.sha256(request.body).hexdigest()
    claimed = headers.get("x-amz-content-sha256")
    if claimed is not None and claimed != body_hash:
        return "x-amz-content-sha256 does not match the body"
    aws_request = AWSRequest(
        method=request.method,
        url=f"http://{headers['host']}{request.path}",
        headers={name: headers[name] for name in signed},
        data=request.body,
    )
    aws_request.context["timestamp"] = amz_date
    signer = _Signer(
        Credentials(credentials.access_key, credentials.secret_key, credentials.session_token),
        service, region, signed,
    )
    canonical = signer.canonical_request(aws_request)
    expected = signer.signature(signer.string_to_sign(aws_request, canonical), aws_request)
    if not hmac.compare_digest(expected, match["signature"]):
        return "the request signature we calculated does not match the signature you provided"
    return None


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
        reason = rejection_reason(request, self.known, region=self.region, service=self.service)
        with self._gate_lock:
            if reason is None:
                self._accepted += 1
            else:
                self._rejections.append(reason)
        if reason is not None:
            return 403, [("Content-Type", "application/json")], json.dumps(
                {"message": reason}).encode()
        return super().forward(request, body)


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
