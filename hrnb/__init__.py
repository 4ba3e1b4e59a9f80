"""hrnb: a live heart-rate workbench (BLE watch -> Kinesis -> Lambda -> OpenSearch -> notebooks).

A lazy facade: ``import hrnb`` imports nothing but this file, so it stays cheap and safe in the
Lambda zip (which carries it with :mod:`hrnb.errors` and :mod:`hrnb.wire`), and boto3, bleak,
plotly or pandas load only when a name that needs them is first used. The names below are the
public surface; ``tests/test_exported_members.py`` checks each one resolves.

Packages follow the data's path (``docs/architecture.md``): ``sources`` → ``stream`` (Kinesis) →
``wire`` (what the Lambda shares) → ``query`` / ``live`` (what notebooks show), with
``provision`` for AWS resources and ``local`` for the embedded stack.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "Settings": "hrnb.config",
    "HrnbError": "hrnb.errors",
    "ConfigError": "hrnb.errors",
    "Measurement": "hrnb.hrm",
    "parse_measurement": "hrnb.hrm",
    "encode_measurement": "hrnb.hrm",
    "Sample": "hrnb.sources.base",
    "ConnectionEvent": "hrnb.sources.base",
    "HeartRateSource": "hrnb.sources.base",
    "from_spec": "hrnb.sources.spec",
    "KinesisProducer": "hrnb.stream.producer",
    "StreamSession": "hrnb.stream.session",
    "LiveDashboard": "hrnb.live.dashboard",
    "LiveSession": "hrnb.live.session",
}
#: Subpackages reachable as attributes (``hrnb.query.samples(...)``) without importing them first.
_SUBMODULES = ("errors", "config", "clients", "hrm", "metrics", "sources", "stream", "wire",
               "live", "query", "provision", "local")

__all__ = ["__version__", *_EXPORTS, *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"hrnb.{name}")
    else:
        raise AttributeError(f"module 'hrnb' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
