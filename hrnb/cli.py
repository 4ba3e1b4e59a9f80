"""The ``hrnb`` command line (also ``python -m hrnb``): presentation only, the work lives in
the modules it calls. Every HrnbError becomes one clear line on stderr and a non-zero exit;
foreign errors become HrnbErrors where they happen (:mod:`hrnb.boundary`), so anything else
reaching :func:`main` is a bug, reported as one line too (``-v`` shows its traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

from hrnb import __version__
from hrnb.boundary import file_errors
from hrnb.config import Settings
from hrnb.errors import ConfigError, HrnbError
from hrnb.wire.alert import DEFAULT_ALERT_THRESHOLD_BPM, check_alert_threshold

Handler = Callable[[argparse.Namespace, Settings], int]


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


# --- local ---------------------------------------------------------------------------------------
def _local_up(args: argparse.Namespace, settings: Settings) -> int:
    from hrnb.local import launcher

    result = launcher.up(settings, progress=_progress, poller=not args.no_poller)
    if args.started_file:
        with file_errors("write", args.started_file), open(args.started_file, "w") as handle:
            handle.write(",".join(result.started))
    _print_stack(result, as_json=args.json)
    return 0 if result.healthy else 1


def _local_down(args: argparse.Namespace, settings: Settings) -> int:
    from hrnb.local import launcher

    only = launcher.SERVICES
    if args.only:
        only = tuple(name for name in args.only.split(",") if name)
    unknown = sorted(set(only) - set(launcher.SERVICES))
    if unknown:
        raise ConfigError(
            f"--only: unknown service(s) {', '.join(unknown)}; choose from "
            + ", ".join(launcher.SERVICES),
            setting="only",
        )
    result = launcher.down(settings, wipe=args.wipe, only=only, progress=_progress)
    print("stopped: " + (", ".join(result.stopped) or "nothing (hrnb had started nothing)"))
    return 0


def _local_status(args: argparse.Namespace, settings: Settings) -> int:
    from hrnb.local import launcher

    result = launcher.status(settings)
    _print_stack(result, as_json=args.json)
    return 0 if result.healthy else 1


def _print_stack(result: Any, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
        return
    for service in result.services:
        state = "healthy" if service.healthy else "not running"
        origin = "" if service.managed or not service.healthy else " (not started by hrnb)"
        rss = f", {service.rss_mb:.0f} MB" if service.rss_mb else ""
        pid = f"pid {service.pid}" if service.pid else "no pid"
        print(f"{service.name:<11} {state}{origin}  {service.url or ''}  "
              f"{service.version or ''}  ({pid}{rss})")
        if service.log_path:
            print(f"{'':<11} log: {service.log_path}")
        if service.name == "opensearch" and result.security:
            print(f"{'':<11} fine-grained access control: on (HRNB_OPENSEARCH_SECURITY=off for "
                  "a plain node)")
        if service.name == "poller" and service.detail:
            for line in service.detail.splitlines():
                print(f"{'':<11} {line}")
    print(f"state directory: {result.state_dir}")
    print("stack healthy" if result.healthy else "stack NOT healthy")


# --- scan --------------------------------------------------------------------------------------
def _scan(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from hrnb.sources import describe_devices, scan

    if args.timeout <= 0:
        raise ConfigError(f"--timeout must be positive, got {args.timeout}", setting="timeout")
    print(f"scanning {args.timeout:g} s for heart-rate devices ...", file=sys.stderr)
    devices = asyncio.run(scan(args.timeout))
    print(describe_devices(devices))
    return 0 if devices else 1


def _recording(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from hrnb.sources import ReplaySource, Sample

    source = ReplaySource(args.file, speed=None)

    async def read() -> tuple[int, Sample, Sample]:
        count, first, last = 0, None, None
        async with source:
            async for item in source:
                if isinstance(item, Sample):
                    count, first, last = count + 1, first or item, item
        assert first is not None and last is not None  # a recording without samples raises
        return count, first, last

    count, first_sample, last_sample = asyncio.run(read())
    first, last = first_sample.received_at, last_sample.received_at
    print(f"{args.file}: {count} heart-rate samples, {first:%Y-%m-%d %H:%M:%S} to "
          f"{last:%H:%M:%S} UTC ({(last - first).total_seconds():g} s)")
    print(f"times: {source.time_base}; records without heart rate: "
          f"{source.records_without_heart_rate}; bad rows skipped: {len(source.bad_rows)}")
    return 0


# --- stream ------------------------------------------------------------------------------------
def _speed(text: str) -> float | None:
    """``--speed``: a factor such as 1, 10 or 0.5, or ``max`` for as fast as possible."""
    if text == "max":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'max', got {text!r}") from None


def _stream(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from hrnb.stream import session as streaming

    options = streaming.parse_stream_options(
        args.source, duration_s=args.duration, athletes=args.athletes, athlete_id=args.athlete,
        rate_hz=args.rate, speed=args.speed, seed=args.seed, flush_timeout_s=args.flush_timeout,
        spool_path=args.spool, verify=not args.no_verify, verify_timeout_s=args.verify_timeout,
    )

    shown = False

    def show(progress: streaming.StreamProgress) -> None:
        nonlocal shown
        shown = True
        print("\r" + streaming.format_progress(progress), end="", file=sys.stderr, flush=True)

    try:
        summary = asyncio.run(streaming.run_stream(options, settings, on_progress=show))
    finally:
        if shown:  # end the progress line, so an error starts a line of its own
            print(file=sys.stderr)
    print(streaming.format_summary(summary))
    return 0 if summary.complete else 1


# --- setup / teardown ----------------------------------------------------------------------------
def _artifacts(args: argparse.Namespace, *, required: bool) -> Any:
    from pathlib import Path

    from hrnb import provision
    from hrnb.errors import ProvisionError

    try:
        return provision.LambdaArtifacts.from_build_dir(Path(args.build_dir), args.arch)
    except ProvisionError:
        if required:
            raise
        return None


def _print_steps(steps: Sequence[Any]) -> None:
    for step in steps:
        ident = f"  {step.id}" if step.id else ""
        detail = f"  ({step.detail})" if step.detail else ""
        print(f"  {step.action:<9} {step.step:<22} {step.resource}{ident}{detail}")


def _setup(args: argparse.Namespace, settings: Settings) -> int:
    from hrnb import provision

    if args.dry_run:
        plan = provision.plan(settings, _artifacts(args, required=False))
        print(f"plan for target {plan.target} in {plan.region} (nothing is changed):")
        _print_steps(plan.steps)
        cost = plan.cost
        if plan.billable:
            print(f"cost on AWS: about ${cost.idle_hourly_usd:.3f}/hour while it exists, "
                  f"+${cost.streaming_hourly_usd:.3f}/hour while streaming, "
                  f"about ${cost.monthly_usd:.2f}/month ({cost.price_source}, {cost.price_as_of})")
        else:
            print("cost: nothing (the local stack)")
        return 0
    report = provision.setup(settings, _artifacts(args, required=True), progress=_progress)
    _print_steps(report.results)
    if report.opensearch_url and not settings.is_local:
        print(f"OpenSearch endpoint: {report.opensearch_url} (clients find it themselves)")
    print("set-up complete" + ("" if report.changed else " (everything was already in place)"))
    return 0


def _teardown(args: argparse.Namespace, settings: Settings) -> int:
    from hrnb import provision

    def confirm(preview: tuple[Any, ...]) -> bool:
        print(f"teardown on target {settings.target} in {settings.region} will delete:")
        _print_steps([step for step in preview if step.action == "deleted"])
        if args.yes:
            return True
        if not sys.stdin.isatty():
            raise ConfigError("refusing to delete without confirmation: pass --yes",
                              setting="yes")
        return input("delete these? [y/N] ").strip().lower() in ("y", "yes")

    report = provision.confirmed_teardown(settings, confirm, progress=_progress)
    if report is None:
        print("nothing deleted")
        return 1
    _print_steps(report.results)
    if report.nothing_billable_remains:
        print("nothing hrnb created remains")
        return 0
    print("still there: " + ", ".join(report.remaining))
    return 1


def _redrive(args: argparse.Namespace, settings: Settings) -> int:
    from hrnb.redrive import redrive

    report = redrive(settings, progress=_progress)
    print(f"{report.batches} given-up batch(es) found, {report.redriven} redriven "
          f"({report.records} records indexed again)")
    for problem in report.lost + report.failed:
        print(f"  not redriven: {problem}")
    return 0 if report.complete else 1


def _policy(args: argparse.Namespace, settings: Settings) -> int:
    from hrnb import provision

    account = args.account or provision.AwsClients(settings).account_id
    arns = provision.Arns.of(settings, account)
    print(json.dumps(arns.operator_policy(), indent=2))
    return 0


# --- alerts --------------------------------------------------------------------------------------
def _alerts(args: argparse.Namespace, settings: Settings) -> int:
    from hrnb import alerts

    listed = alerts.delivered(settings)
    if not listed:
        print("no alert episode notified yet")
        return 0
    print(f"{'athlete':<16} {'start (UTC)':<24} {'peak':>5} {'threshold':>9}  episode id")
    for notification in listed:
        print(f"{notification.athlete_id:<16} {notification.start:<24} "
              f"{notification.peak_bpm:>5} {notification.threshold_bpm:>9}  "
              f"{notification.episode_id}")
    return 0


def _alerts_subscribe(args: argparse.Namespace, settings: Settings) -> int:
    from hrnb.provision.alerts import subscribe

    protocol, endpoint = next((name, value) for name in ("email", "sms", "https")
                              if (value := getattr(args, name)) is not None)
    arn = subscribe(settings, protocol, endpoint)
    pending = "" if arn.startswith("arn:") else " (pending: the recipient must confirm)"
    print(f"subscribed {protocol} {endpoint} to {settings.alert_topic_name}{pending}")
    return 0


# --- demo ----------------------------------------------------------------------------------------
def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from hrnb.demo import run_demo
    from hrnb.live.session import format_report

    result = run_demo(settings, build_dir=Path(args.build_dir), out_dir=Path(args.out),
                      duration_s=args.duration, athletes=args.athletes, progress=_progress)
    print(format_report(result.summary))
    print(f"executed notebooks: {', '.join(str(p) for p in result.notebooks)}")
    print(f"chart exports: {', '.join(str(p) for p in result.exports)}")
    print("explore it: make lab   (JupyterLab on notebooks/ with the stack up)")
    return 0 if not result.summary["missing"] else 1  # acknowledged samples not indexed


# --- query -------------------------------------------------------------------------------------
def _query(args: argparse.Namespace, settings: Settings) -> int:
    from hrnb import metrics, query
    from hrnb.search_client import opensearch_client

    if args.minutes is not None and not (math.isfinite(args.minutes) and args.minutes > 0):
        raise ConfigError(f"--minutes must be positive, got {args.minutes}",
                          setting="minutes")
    if args.threshold is not None:
        check_alert_threshold(args.threshold, setting="--threshold")
    if args.csv:
        _check_writable(args.csv, "--csv")
    zones = None
    if args.max_hr is not None:
        zones = (metrics.zones_karvonen(args.max_hr, args.resting_hr) if args.resting_hr
                 else metrics.zones_from_max_hr(args.max_hr))
    elif args.resting_hr is not None:
        raise ConfigError("--resting-hr needs --max-hr too (Karvonen zones)", setting="resting_hr")
    result = query.run_named_query(
        args.name, opensearch_client(settings), settings,
        minutes=args.minutes, athlete_id=args.athlete, session_id=args.session,
        interval=args.interval, zones=zones, threshold_bpm=args.threshold,
    )
    if args.show_query:
        print(result.show_query())
    if args.csv:
        with file_errors("write", args.csv):
            result.df.to_csv(args.csv, index=False)
        print(f"wrote {len(result.df)} rows to {args.csv}")
    else:
        print(result.df.to_string(index=False) if len(result.df) else "(no rows)")
    return 0


def _check_writable(path: str, flag: str) -> None:
    """Refuse an output file whose directory is missing or read-only before any work is done."""
    import os
    from pathlib import Path

    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"{flag} {path} is a directory; give a file name", setting=flag)
    folder = target.parent
    if not folder.is_dir():
        raise ConfigError(f"{flag} {path}: the directory {folder} does not exist", setting=flag)
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"{flag} {path}: the directory {folder} is not writable",
                          setting=flag)


# --- parser --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hrnb",
        description="Live heart-rate workbench: watch -> Kinesis -> Lambda -> OpenSearch.",
    )
    parser.add_argument("--version", action="version", version=f"hrnb {__version__}")
    parser.add_argument("--target", choices=["local", "aws"], help="default: HRNB_TARGET or local")
    parser.add_argument("--region", help="AWS region (default: HRNB_REGION or ap-south-1)")
    parser.add_argument("--prefix", help="name prefix of every resource (default: hrnb)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    local = commands.add_parser("local", help="the embedded local stack")
    local_commands = local.add_subparsers(dest="local_command", metavar="ACTION", required=True)
    up = local_commands.add_parser("up", help="start what is not running and wait until healthy")
    up.add_argument("--json", action="store_true", help="print the status as one JSON object")
    up.add_argument("--no-poller", action="store_true", help="do not start the Lambda poller")
    up.add_argument("--started-file", help=argparse.SUPPRESS)
    up.set_defaults(handler=_local_up)
    down = local_commands.add_parser("down", help="stop what 'up' started")
    down.add_argument("--wipe", action="store_true", help="also delete OpenSearch's data")
    down.add_argument("--only", help="comma-separated services to stop (aws,opensearch,poller)")
    down.set_defaults(handler=_local_down)
    stat = local_commands.add_parser("status", help="what runs, where, and its logs")
    stat.add_argument("--json", action="store_true", help="print one JSON object")
    stat.set_defaults(handler=_local_status)
    scan = commands.add_parser("scan", help="list watches advertising heart rate (0x180D)")
    scan.add_argument("--timeout", type=float, default=5.0, help="seconds to listen (5)")
    scan.set_defaults(handler=_scan)

    recording = commands.add_parser(
        "recording", help="read a .fit/.csv recording as a replay would and summarise it")
    recording.add_argument("file", help="the recording")
    recording.set_defaults(handler=_recording)

    stream = commands.add_parser("stream", help="stream heart rate to Kinesis")
    stream.add_argument("--source", default="simulated",
                        help="simulated | emulated | ble[:ADDRESS_OR_NAME] | replay:FILE")
    stream.add_argument("--duration", type=float, help="seconds (default: until Ctrl-C or EOF)")
    stream.add_argument("--athletes", type=int, help="simulated athletes (default 1)")
    stream.add_argument("--athlete", "--athlete-id", dest="athlete", help="athlete id")
    stream.add_argument("--rate", "--rate-hz", dest="rate", type=float,
                        help="samples per second per athlete (default 1)")
    stream.add_argument("--speed", type=_speed, default=1.0,
                        help="replay/simulation speed factor, or 'max' (default 1)")
    stream.add_argument("--seed", type=int, help="random seed of the simulated athletes")
    stream.add_argument("--flush-timeout", type=float, default=30.0,
                        help="seconds to wait for Kinesis at the end (default 30)")
    stream.add_argument("--spool", help="spool file (default: in the state directory)")
    stream.add_argument("--no-verify", action="store_true",
                        help="do not wait for the index to hold what Kinesis acknowledged")
    stream.add_argument("--verify-timeout", type=float, default=60.0,
                        help="seconds to wait for the index at the end (default 60)")
    stream.set_defaults(handler=_stream)

    setup = commands.add_parser("setup", help="provision stream, role, domain, index, Lambda")
    setup.add_argument("--dry-run", action="store_true", help="show the plan and its cost only")
    setup.add_argument("--build-dir", default="build/lambda", help="the Lambda build (make lambda)")
    setup.add_argument("--arch", choices=["x86_64", "arm64"], default="x86_64")
    setup.set_defaults(handler=_setup)
    teardown = commands.add_parser("teardown", help="delete everything set-up created")
    teardown.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    teardown.set_defaults(handler=_teardown)
    redo = commands.add_parser("redrive", help="index again the batches the trigger gave up on")
    redo.set_defaults(handler=_redrive)
    policy = commands.add_parser("policy", help="print the operator's least-privilege IAM policy")
    policy.add_argument("--account", help="AWS account id (default: the caller's)")
    policy.set_defaults(handler=_policy)
    notified = commands.add_parser(
        "alerts", help="alert episodes notified so far (once each), or subscribe people")
    notified.set_defaults(handler=_alerts)
    alerts_commands = notified.add_subparsers(dest="alerts_command", metavar="SUBCOMMAND")
    join = alerts_commands.add_parser("subscribe", help="send alerts by email, SMS or HTTPS")
    how = join.add_mutually_exclusive_group(required=True)
    how.add_argument("--email", help="an email address (it must confirm the subscription)")
    how.add_argument("--sms", help="a phone number in E.164 form, e.g. +14155550123")
    how.add_argument("--https", help="an https:// URL (it must confirm the subscription)")
    join.set_defaults(handler=_alerts_subscribe)
    demo = commands.add_parser("demo", help="the main job on the local stack (make demo)")
    demo.add_argument("--duration", type=float, default=60.0, help="live session seconds (60)")
    demo.add_argument("--athletes", type=int, default=1, help="simulated athletes (1)")
    demo.add_argument("--out", default="out", help="where results go (out/)")
    demo.add_argument("--build-dir", default="build/lambda", help="the Lambda build")
    demo.set_defaults(handler=_demo)

    from hrnb.query import QUERY_NAMES

    ask = commands.add_parser("query", help="recent heart rate from OpenSearch, as a table")
    ask.add_argument("name", choices=QUERY_NAMES, help="which query")
    ask.add_argument("--minutes", type=float, help="only the last M minutes (default: all)")
    ask.add_argument("--athlete", help="one athlete id")
    ask.add_argument("--session", help="one session id")
    ask.add_argument("--interval", default="5s", help="bucket size of last-per-interval (5s)")
    ask.add_argument("--max-hr", type=int, help="max heart rate for zones (bpm)")
    ask.add_argument("--resting-hr", type=int, help="resting heart rate: Karvonen zones (bpm)")
    ask.add_argument("--threshold", type=int,
                     help="alert threshold, bpm (default: HRNB_HR_ALERT_THRESHOLD_BPM or "
                     f"{DEFAULT_ALERT_THRESHOLD_BPM})")
    ask.add_argument("--show-query", action="store_true", help="print the OpenSearch query")
    ask.add_argument("--csv", help="write the rows to this CSV file instead of printing")
    ask.set_defaults(handler=_query)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {
        name: getattr(args, name)
        for name in ("target", "region", "prefix")
        if getattr(args, name, None) is not None
    }
    return Settings.from_env(**overrides)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # opensearch-py logs every non-2xx at WARNING; hrnb turns those into one clear error.
        logging.getLogger("opensearch").setLevel(logging.ERROR)
    handler: Handler = args.handler
    try:
        return handler(args, settings_from_args(args))
    except ConfigError as exc:
        print(f"hrnb: error: {exc}", file=sys.stderr)
        return 2
    except HrnbError as exc:
        print(f"hrnb: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hrnb: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a foreign error no boundary translated: a bug, still one line
        logging.getLogger("hrnb").debug("untranslated error", exc_info=True)
        print(f"hrnb: unexpected error (a bug in hrnb; -v shows the traceback): "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
