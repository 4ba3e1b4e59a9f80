"""One explicit, validated settings object for every part of hrnb.

Two targets share the same code: ``local`` (the default) talks only to the embedded stack on
loopback with dummy credentials, so it can never reach real AWS; ``aws`` uses the normal boto3
credential chain and refuses loopback endpoints. ``HRNB_*`` environment variables override the
defaults; nothing is read from the environment at import time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from hrnb.errors import ConfigError
from hrnb.wire.alert import DEFAULT_ALERT_THRESHOLD_BPM, check_alert_threshold
from hrnb.wire.episodes import (
    DEFAULT_REARM_MARGIN_BPM,
    DEFAULT_REARM_S,
    DEFAULT_SUSTAIN_S,
    AlertRules,
    check_margin,
    check_seconds,
    parse_thresholds,
)

Target = Literal["local", "aws"]

#: Credentials the local target hands to boto3 and the emulator; never real ones.
LOCAL_ACCESS_KEY_ID = "hrnb-local"
LOCAL_SECRET_ACCESS_KEY = "hrnb-local-secret"

# fullmatch everywhere: "$" would accept a trailing newline.
_PREFIX_RE = re.compile(r"[a-z][a-z0-9-]{1,15}")
_REGION_RE = re.compile(r"[a-z]{2}(-gov)?-[a-z]+-\d")
_READER_ARN_RE = re.compile(
    r"arn:aws(-cn|-us-gov)?:iam::\d{12}:(root|user/[\w+=,.@/-]+|role/[\w+=,.@/-]+)")
_INDEX_RE = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hrnb"


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "hrnb"


def is_loopback_url(url: str) -> bool:
    """True when ``url`` points at this machine (127.0.0.0/8, localhost or ::1)."""
    host = urlparse(url).hostname or ""
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


@dataclass(frozen=True)
class Settings:
    """Everything configurable, validated when built; AWS resource names derive from ``prefix``."""

    target: Target = "local"
    region: str = "ap-south-1"
    prefix: str = "hrnb"
    # Empty: derived from the prefix (``<prefix>-heart-rate``, ``<prefix>-heart-rate-dlq``), so
    # two prefixes never share an index; an explicit name (HRNB_INDEX_NAME) is kept as given.
    index_name: str = ""
    dlq_index_name: str = ""
    hr_alert_threshold_bpm: int = DEFAULT_ALERT_THRESHOLD_BPM
    # Alert episodes (hrnb.wire.episodes): per-athlete thresholds ("a1=160,a2=175") over the
    # default above; an episode opens after alert_sustain_s above, ends after alert_rearm_s
    # below threshold - alert_rearm_margin_bpm.
    alert_thresholds: str = ""
    alert_sustain_s: float = DEFAULT_SUSTAIN_S
    alert_rearm_s: float = DEFAULT_REARM_S
    alert_rearm_margin_bpm: int = DEFAULT_REARM_MARGIN_BPM
    stream_shards: int = 0  # 0 = on-demand capacity
    # IAM principals (comma-separated ARNs) fine-grained access control lets read the indices;
    # empty: whoever runs set-up. The account root and IAM users are mapped as users, roles as
    # backend roles.
    reader_principals: str = ""
    # Local stack.
    aws_port: int = 5000
    opensearch_port: int = 9200
    opensearch_version: str = "2.19.4"
    opensearch_heap_mb: int = 512
    # Fine-grained access control on the local node: the security plugin, TLS and the SigV4
    # front on ``opensearch_port``; the node itself listens on ``opensearch_node_port``
    # (0: the next port). Off: a plain HTTP node on ``opensearch_port``.
    opensearch_security: bool = True
    opensearch_node_port: int = 0
    # Where the running local stack keeps its CA and master user: state_dir when the settings
    # are made, kept when a copy moves state_dir (a test's private provisioning state).
    stack_state_dir: Path | None = None
    cache_dir: Path = field(default_factory=_default_cache_dir)
    state_dir: Path = field(default_factory=_default_state_dir)
    # Endpoints: derived for the local target; for aws the OpenSearch URL is the domain endpoint.
    aws_endpoint_url: str | None = None
    opensearch_url: str | None = None

    def __post_init__(self) -> None:
        if self.stack_state_dir is None:
            object.__setattr__(self, "stack_state_dir", self.state_dir)
        if self.target not in ("local", "aws"):
            raise ConfigError(
                f"target must be 'local' or 'aws', got {self.target!r}", setting="target"
            )
        if not _REGION_RE.fullmatch(self.region):
            raise ConfigError(
                f"region {self.region!r} is not an AWS region name (e.g. ap-south-1)",
                setting="region",
            )
        if not _PREFIX_RE.fullmatch(self.prefix):
            raise ConfigError(
                f"prefix {self.prefix!r} must be 2-16 characters: a lowercase letter, then "
                "lowercase letters, digits or '-' (it names the domain, which AWS limits to 28)",
                setting="prefix",
            )
        for name, derived in (("index_name", self.default_index_name),
                              ("dlq_index_name", self.default_dlq_index_name)):
            if not getattr(self, name):
                object.__setattr__(self, name, derived)
            value = getattr(self, name)
            if not _INDEX_RE.fullmatch(value) or value in (".", ".."):
                raise ConfigError(
                    f"{name} {value!r} is not a valid OpenSearch index name "
                    "(lowercase letters, digits, '_', '-', '.')",
                    setting=name,
                )
        check_alert_threshold(self.hr_alert_threshold_bpm, setting="hr_alert_threshold_bpm")
        parse_thresholds(self.alert_thresholds, setting="alert_thresholds")
        for name in ("alert_sustain_s", "alert_rearm_s"):
            check_seconds(getattr(self, name), setting=name)
        check_margin(self.alert_rearm_margin_bpm, setting="alert_rearm_margin_bpm")
        for arn in self.reader_principal_arns:
            if not _READER_ARN_RE.fullmatch(arn):
                raise ConfigError(
                    f"reader_principals: {arn!r} is not an IAM principal ARN "
                    "(arn:aws:iam::<account>:root, :user/<name> or :role/<name>)",
                    setting="reader_principals",
                )
        if not 0 <= self.stream_shards <= 500:
            raise ConfigError(
                f"stream_shards must be 0 (on-demand) .. 500, got {self.stream_shards}",
                setting="stream_shards",
            )
        for name in ("aws_port", "opensearch_port", "opensearch_node_port"):
            lowest = 0 if name == "opensearch_node_port" else 1  # 0: the next port
            if not lowest <= getattr(self, name) <= 65535:
                raise ConfigError(
                    f"{name} must be a TCP port, got {getattr(self, name)}", setting=name
                )
        if not 128 <= self.opensearch_heap_mb <= 16384:
            raise ConfigError(
                f"opensearch_heap_mb must be 128..16384, got {self.opensearch_heap_mb}",
                setting="opensearch_heap_mb",
            )
        if self.target == "local":
            for name in ("aws_endpoint_url", "opensearch_url"):
                url = getattr(self, name)
                if url is not None and not is_loopback_url(url):
                    raise ConfigError(
                        f"{name}={url!r}: the local target only talks to this machine; "
                        "set HRNB_TARGET=aws to use real AWS",
                        setting=name,
                    )
        else:
            for name in ("aws_endpoint_url", "opensearch_url"):
                url = getattr(self, name)
                if url is not None and is_loopback_url(url):
                    raise ConfigError(
                        f"{name}={url!r} points at this machine, but target is 'aws'; "
                        "unset it or use HRNB_TARGET=local",
                        setting=name,
                    )

    # --- derived names -------------------------------------------------------------------
    @property
    def default_index_name(self) -> str:
        return f"{self.prefix}-heart-rate"

    @property
    def default_dlq_index_name(self) -> str:
        return f"{self.prefix}-heart-rate-dlq"

    @property
    def reader_principal_arns(self) -> tuple[str, ...]:
        """The configured readers, in order; empty means the set-up caller."""
        return tuple(arn.strip() for arn in self.reader_principals.split(",") if arn.strip())

    @property
    def stream_name(self) -> str:
        return f"{self.prefix}-hr-stream"

    @property
    def role_name(self) -> str:
        return f"{self.prefix}-indexer-role"

    @property
    def function_name(self) -> str:
        return f"{self.prefix}-indexer"

    @property
    def layer_name(self) -> str:
        """The dependency layer an earlier hrnb published; set-up and teardown delete it."""
        return f"{self.prefix}-indexer-deps"

    @property
    def domain_name(self) -> str:
        return f"{self.prefix}-hr"

    @property
    def failure_queue_name(self) -> str:
        """The SQS queue the trigger sends the coordinates of given-up batches to."""
        return f"{self.prefix}-indexer-failed"

    @property
    def alert_rules(self) -> AlertRules:
        """The episode rules the function applies (validated when the settings were made)."""
        return AlertRules(
            threshold_bpm=self.hr_alert_threshold_bpm,
            thresholds=parse_thresholds(self.alert_thresholds, setting="alert_thresholds"),
            sustain_s=self.alert_sustain_s, rearm_s=self.alert_rearm_s,
            rearm_margin_bpm=self.alert_rearm_margin_bpm)

    @property
    def alert_state_index(self) -> str:
        """The OpenSearch index keeping each athlete's episode state (one document each)."""
        return f"{self.prefix}-hr-alert-state"

    @property
    def alert_topic_name(self) -> str:
        return f"{self.prefix}-hr-alerts"

    @property
    def alert_log_queue_name(self) -> str:
        """The SQS queue subscribed to the topic: the record ``hrnb alerts`` reads."""
        return f"{self.prefix}-hr-alerts-log"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def is_local(self) -> bool:
        return self.target == "local"

    @property
    def resolved_aws_endpoint_url(self) -> str | None:
        """The emulator's URL on the local target; None (boto3's own endpoints) on AWS."""
        if self.aws_endpoint_url:
            return self.aws_endpoint_url
        return f"http://127.0.0.1:{self.aws_port}" if self.is_local else None

    @property
    def resolved_opensearch_url(self) -> str | None:
        """The local node's URL on the local target; the domain endpoint (once known) on AWS."""
        if self.opensearch_url:
            return self.opensearch_url
        if not self.is_local:
            return None
        scheme = "https" if self.opensearch_security else "http"
        return f"{scheme}://127.0.0.1:{self.opensearch_port}"

    @property
    def local_security(self) -> bool:
        """True when the local node runs the security plugin behind the SigV4 front."""
        return self.is_local and self.opensearch_security

    @property
    def resolved_opensearch_node_port(self) -> int:
        """The local node's own port (behind the front when security is on)."""
        if not self.opensearch_security:
            return self.opensearch_port
        return self.opensearch_node_port or self.opensearch_port + 1

    @property
    def local_ca_path(self) -> Path:
        """The local CA certificate that clients of the secured local stack trust (made by
        ``hrnb local up`` in the stack's state directory)."""
        return self.local_stack_dir / "tls" / "ca.pem"

    @property
    def local_stack_dir(self) -> Path:
        """The state directory of the local stack these settings talk to."""
        return self.stack_state_dir or self.state_dir

    @property
    def spool_path(self) -> Path:
        return self.state_dir / "spool.sqlite3"

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields changed, validated again; index names derived from the old
        prefix follow a new one."""
        if "prefix" in changes:
            for name, derived in (("index_name", self.default_index_name),
                                  ("dlq_index_name", self.default_dlq_index_name)):
                if name not in changes and getattr(self, name) == derived:
                    changes[name] = ""
        return replace(self, **changes)

    # --- environment -----------------------------------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``HRNB_<FIELD>`` variables, then keyword overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"HRNB_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            values[f.name] = _coerce(f.name, f.type, raw)
        values.update(overrides)
        return cls(**values)


def _coerce(name: str, type_name: Any, raw: str) -> Any:
    type_text = str(type_name)
    var = f"HRNB_{name.upper()}"
    if type_text == "int":
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{var}={raw!r} is not a whole number", setting=name) from None
    if type_text == "float":
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{var}={raw!r} is not a number", setting=name) from None
    if type_text == "bool":
        lowered = raw.strip().lower()
        if lowered in ("1", "on", "true", "yes"):
            return True
        if lowered in ("0", "off", "false", "no"):
            return False
        raise ConfigError(f"{var}={raw!r} must be on or off", setting=name)
    if type_text in ("Path", "Path | None"):
        return Path(raw).expanduser()
    return raw
