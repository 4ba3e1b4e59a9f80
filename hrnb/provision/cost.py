"""The list-price cost estimate shown in every plan."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from hrnb.config import Settings
from hrnb.provision.domain import INSTANCE_COUNT, INSTANCE_TYPE, VOLUME_GIB
from hrnb.provision.function import FUNCTION_MEMORY_MB

_HOURS_PER_MONTH = 730


@dataclass(frozen=True)
class CostLine:
    """One billed item: USD per hour while it exists (or streams) and per month."""

    item: str
    hourly_usd: float
    monthly_usd: float
    basis: str


@dataclass(frozen=True)
class CostEstimate:
    """AWS list-price estimate. ``idle_hourly_usd`` is paid while the resources exist,
    ``streaming_hourly_usd`` on top while a session streams at the assumed rate."""

    lines: tuple[CostLine, ...]
    idle_hourly_usd: float
    streaming_hourly_usd: float
    monthly_usd: float
    priced_region: str
    price_source: str
    price_as_of: str
    assumptions: str


# --- cost --------------------------------------------------------------------------------------
PRICES_FILE = "prices.json"


def load_prices() -> dict[str, Any]:
    """The price table shipped in ``hrnb/provision/data/prices.json`` (with its source and date)."""
    return json.loads(resources.files("hrnb.provision").joinpath("data", PRICES_FILE).read_text())


def estimate_cost(
    settings: Settings,
    prices: Mapping[str, Any] | None = None,
    *,
    batch_size: int = 2,
    records_per_second: float = 2.0,
    record_bytes: int = 400,
    streaming_hours_per_month: float = 30.0,
    invocation_ms: float = 150.0,
    log_bytes_per_invocation: int = 600,
    architecture: str = "x86_64",
    alert_episodes_per_hour: float = 4.0,
) -> CostEstimate:
    """Hourly and monthly AWS cost of the set-up (pure). Fixed items bill while they exist;
    usage items while a session streams at ``records_per_second`` (the reference's 2/s);
    Lambda compute at the function's ``architecture`` rate (arm64 is ~20 % cheaper); alerts at
    ``alert_episodes_per_hour`` (one publish each, delivered to the log queue and one email
    subscriber; SMS is billed per message by destination country, see docs/operations.md)."""
    table = prices or load_prices()
    region = settings.region if settings.region in table["regions"] else table["fallback_region"]
    price = table["regions"][region]
    seconds = 3600.0
    invocations_per_hour = records_per_second / batch_size * seconds
    gb_per_hour = records_per_second * record_bytes * seconds / 1e9

    def line(item: str, hourly: float, basis: str, monthly_hours: float) -> CostLine:
        return CostLine(item, hourly, hourly * monthly_hours, basis)

    fixed = [
        line(f"OpenSearch {INSTANCE_COUNT} x {INSTANCE_TYPE}",
             INSTANCE_COUNT * price["opensearch_instance_hour"][INSTANCE_TYPE],
             "per instance-hour", _HOURS_PER_MONTH),
        line(f"OpenSearch gp3 {VOLUME_GIB} GiB (3000 IOPS, 125 MiB/s included)",
             VOLUME_GIB * price["opensearch_gp3_gb_month"] / _HOURS_PER_MONTH,
             "per GB-month", _HOURS_PER_MONTH),
    ]
    if settings.stream_shards == 0:
        fixed.append(line("Kinesis on-demand stream", price["kinesis_on_demand_stream_hour"],
                          "per stream-hour", _HOURS_PER_MONTH))
        kinesis_data = gb_per_hour * (price["kinesis_on_demand_ingest_gb"]
                                      + price["kinesis_on_demand_retrieval_gb"])
        kinesis_basis = "per GB written and read"
    else:
        fixed.append(line(f"Kinesis {settings.stream_shards} shard(s)",
                          settings.stream_shards * price["kinesis_shard_hour"],
                          "per shard-hour", _HOURS_PER_MONTH))
        kinesis_data = records_per_second * seconds / 1e6 * price["kinesis_put_million_units"]
        kinesis_basis = "per million 25 KB PUT payload units"
    gb_seconds = invocations_per_hour * invocation_ms / 1000.0 * FUNCTION_MEMORY_MB / 1024.0
    usage = [
        line("Kinesis data", kinesis_data, kinesis_basis, streaming_hours_per_month),
        line("Lambda requests and compute",
             invocations_per_hour / 1e6 * price["lambda_million_requests"]
             + gb_seconds * price[f"lambda_gb_second_{architecture}"],
             f"{invocations_per_hour:.0f} invocations/h of {invocation_ms:.0f} ms at "
             f"{FUNCTION_MEMORY_MB} MB, {architecture}", streaming_hours_per_month),
        line("SNS alerts (publish, email) and the alert log queue",
             alert_episodes_per_hour * (price["sns_million_publishes"] / 1e6
                                        + price["sns_email_100k"] / 1e5
                                        + 2 * price["sqs_million_requests"] / 1e6),
             f"{alert_episodes_per_hour:g} episodes/h, one email subscriber; SMS extra, "
             "per message by country", streaming_hours_per_month),
        line("CloudWatch Logs ingestion",
             invocations_per_hour * log_bytes_per_invocation / 1e9 * price["logs_ingest_gb"],
             "per GB ingested", streaming_hours_per_month),
    ]
    idle = sum(item.hourly_usd for item in fixed)
    streaming = sum(item.hourly_usd for item in usage)
    note = "" if region == settings.region else (
        f"; no prices for {settings.region} in the table, priced at {region} list prices")
    return CostEstimate(
        lines=tuple(fixed + usage),
        idle_hourly_usd=idle,
        streaming_hourly_usd=streaming,
        monthly_usd=sum(item.monthly_usd for item in fixed + usage),
        priced_region=region,
        price_source=table["source"],
        price_as_of=table["as_of"],
        assumptions=(f"{records_per_second:g} records/s of {record_bytes} B, batch "
                     f"{batch_size}, {streaming_hours_per_month:g} streaming hours a month, "
                     f"{_HOURS_PER_MONTH} h a month; excludes free tier, tax and data "
                     f"transfer{note}"),
    )

