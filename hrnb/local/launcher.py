"""The embedded local stack: emulated AWS (moto in server mode), a real OpenSearch node, and the
local event source mapping poller, as managed background processes on loopback.

Why: every part of hrnb is checked against real servers over HTTP, on a machine with no AWS
account. ``up`` is idempotent and reuses what already answers; ``down`` stops only what ``up``
started (pid files in the state directory) and keeps OpenSearch's data unless asked to wipe.
The emulator keeps its state in memory, so ``down`` forgets streams, roles and functions.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hrnb.boundary import file_errors
from hrnb.config import Settings
from hrnb.errors import StackError
from hrnb.local.front import PROXY_ADDRESS, ROLES_HEADER, USER_HEADER
from hrnb.local.tls import ADMIN_NAME, NODE_NAME, LocalTls, ensure_local_tls
from hrnb.provision.state import (
    MASTER_USER_NAME,
    MasterUser,
    _write_private,
    generate_master_password,
    load_master_user,
    master_user_path,
)

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

AWS = "aws"
OPENSEARCH = "opensearch"
POLLER = "poller"
SERVICES = (AWS, OPENSEARCH, POLLER)

_MAVEN_ARTIFACT = "org.opensearch.distribution.integ-test-zip:opensearch:{version}:zip"
_MAVEN_SECURITY = "org.opensearch.plugin:opensearch-security:{version}.0:zip"
_HEALTH_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class ServiceStatus:
    """One service of the stack as seen right now."""

    name: str
    url: str | None
    healthy: bool
    pid: int | None  # None when nothing hrnb started is running
    managed: bool  # True when hrnb started it (it has a pid file)
    log_path: str | None
    version: str | None = None
    rss_mb: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class StackStatus:
    """The whole stack; ``started`` names what this call started (empty for status/down)."""

    services: tuple[ServiceStatus, ...]
    started: tuple[str, ...] = ()
    stopped: tuple[str, ...] = ()
    state_dir: str = ""
    security: bool = False

    def service(self, name: str) -> ServiceStatus:
        return next(s for s in self.services if s.name == name)

    @property
    def healthy(self) -> bool:
        return all(s.healthy for s in self.services if s.name in (AWS, OPENSEARCH))

    @property
    def started_anything(self) -> bool:
        return bool(self.started)

    def to_json(self) -> dict[str, object]:
        aws, opensearch = self.service(AWS), self.service(OPENSEARCH)
        return {
            "aws_endpoint_url": aws.url,
            "opensearch_url": opensearch.url,
            "opensearch_version": opensearch.version,
            "healthy": self.healthy,
            "security": self.security,
            "pids": {s.name: s.pid for s in self.services},
            "logs": {s.name: s.log_path for s in self.services},
            "rss_mb": {s.name: s.rss_mb for s in self.services},
            "state_dir": self.state_dir,
            "started": list(self.started),
            "stopped": list(self.stopped),
            "services": [asdict(s) for s in self.services],
        }


@dataclass(frozen=True)
class _Paths:
    state: Path
    cache: Path
    tls: Path  # the local CA and certificates (the stack's, see Settings.stack_state_dir)
    pids: Path = field(init=False)
    logs: Path = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pids", self.state / "pids")
        object.__setattr__(self, "logs", self.state / "logs")

    def pid_file(self, service: str) -> Path:
        return self.pids / f"{service}.pid"

    def log_file(self, service: str) -> Path:
        return self.logs / f"{service}.log"


def _paths(settings: Settings) -> _Paths:
    return _Paths(state=Path(settings.state_dir), cache=Path(settings.cache_dir),
                  tls=settings.local_ca_path.parent)


# --- public API ----------------------------------------------------------------------------
def status(settings: Settings) -> StackStatus:
    """What answers and what hrnb started, without changing anything."""
    paths = _paths(settings)
    services = (
        _aws_status(settings, paths),
        _opensearch_status(settings, paths),
        _poller_status(settings, paths),
    )
    return StackStatus(services=services, state_dir=str(paths.state),
                       security=settings.local_security)


def up(settings: Settings, *, progress: Progress | None = None, poller: bool = True) -> StackStatus:
    """Start what is not running yet and wait until both servers answer their health checks."""
    if not settings.is_local:
        raise StackError("the local stack serves the 'local' target only (HRNB_TARGET=local)")
    say = progress or (lambda message: log.info("%s", message))
    paths = _paths(settings)
    for directory in (paths.pids, paths.logs):
        with file_errors("create the state directory", directory, error=StackError):
            directory.mkdir(parents=True, exist_ok=True)
    started: list[str] = []
    if settings.local_security:
        ensure_local_tls(paths.tls)
        ensure_local_master_user(settings)
    try:
        aws = _aws_status(settings, paths)
        if aws.healthy:
            say(f"emulated AWS already running at {aws.url}")
        else:
            _check_port_free(settings.aws_port, "emulated AWS", "HRNB_AWS_PORT")
            if settings.local_security:
                _check_port_free(settings.opensearch_port, "the local domain endpoint",
                                 "HRNB_OPENSEARCH_PORT")
            say(f"starting emulated AWS (moto) on {settings.resolved_aws_endpoint_url}")
            _start_aws(settings, paths)
            started.append(AWS)

        opensearch = _opensearch_status(settings, paths)
        if opensearch.healthy:
            say(f"OpenSearch {opensearch.version} already running at {opensearch.url}")
        else:
            node_port = settings.resolved_opensearch_node_port
            _check_port_free(node_port, "OpenSearch", "HRNB_OPENSEARCH_NODE_PORT"
                             if settings.local_security else "HRNB_OPENSEARCH_PORT")
            home = ensure_opensearch(settings, progress=say)
            say(f"starting OpenSearch {settings.opensearch_version} on port {node_port}"
                + (" with the security plugin (TLS, fine-grained access control) behind the "
                   f"SigV4 front {settings.resolved_opensearch_url}"
                   if settings.local_security else ""))
            _start_opensearch(settings, paths, home)
            started.append(OPENSEARCH)

        if AWS in started:
            _wait_healthy(lambda: _aws_status(settings, paths), AWS, paths, say)
        if OPENSEARCH in started:
            _wait_healthy(lambda: _opensearch_status(settings, paths), OPENSEARCH, paths, say)
        if poller and _poller_available() and not _poller_status(settings, paths).healthy:
            say("starting the local event source mapping poller")
            _start_poller(settings, paths)
            started.append(POLLER)
    except BaseException:
        # Leave nothing half-started behind.
        _stop_services(paths, started)
        raise
    final = status(settings)
    return StackStatus(services=final.services, started=tuple(started), state_dir=final.state_dir,
                       security=final.security)


def down(
    settings: Settings,
    *,
    wipe: bool = False,
    only: tuple[str, ...] = SERVICES,
    progress: Progress | None = None,
) -> StackStatus:
    """Stop what ``up`` started (never a server it merely found); ``wipe`` deletes the data."""
    say = progress or (lambda message: log.info("%s", message))
    paths = _paths(settings)
    # The poller depends on the others, so it goes first.
    order = [name for name in (POLLER, AWS, OPENSEARCH) if name in only]
    stopped = _stop_services(paths, order, say)
    if wipe:
        for directory in (paths.state / "opensearch", paths.state / "esm"):
            if directory.exists():
                say(f"wiping {directory}")
                shutil.rmtree(directory)
    final = status(settings)
    return StackStatus(services=final.services, stopped=tuple(stopped), state_dir=final.state_dir,
                       security=final.security)


# --- OpenSearch distribution ---------------------------------------------------------------
def ensure_opensearch(settings: Settings, *, progress: Progress | None = None) -> Path:
    """The unpacked OpenSearch distribution (with the security plugin installed when the local
    stack is secured), fetched once into the cache with Maven."""
    say = progress or (lambda message: log.info("%s", message))
    version = settings.opensearch_version
    cache = Path(settings.cache_dir)
    suffix = "-security" if settings.local_security else ""
    home = cache / f"opensearch-{version}{suffix}"
    if (home / "bin" / "opensearch").exists():
        return home
    archive = _maven_fetch(cache, _MAVEN_ARTIFACT.format(version=version),
                           f"opensearch-{version}.zip", f"OpenSearch {version}", say)
    plugin = None
    if settings.local_security:
        plugin = _maven_fetch(cache, _MAVEN_SECURITY.format(version=version),
                              f"opensearch-security-{version}.0.zip",
                              f"the OpenSearch security plugin {version}.0", say)
    say(f"unpacking {archive.name}")
    staging = cache / f".opensearch-{version}{suffix}.{os.getpid()}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(archive) as bundle:
        bundle.extractall(staging)
    inner = staging / f"opensearch-{version}"
    for script in (inner / "bin").iterdir():
        script.chmod(0o755)
    if plugin is not None:
        say(f"installing {plugin.name}")
        result = subprocess.run(
            [str(inner / "bin" / "opensearch-plugin"), "install", "--batch", plugin.as_uri()],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "OPENSEARCH_JAVA_HOME": str(find_java())})
        if result.returncode != 0:
            tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
            raise StackError(f"installing {plugin.name} failed: " + " | ".join(tail))
    try:
        inner.rename(home)
    except OSError:
        if not (home / "bin" / "opensearch").exists():  # not another hrnb finishing first
            raise
    shutil.rmtree(staging, ignore_errors=True)
    return home


def _maven_fetch(cache: Path, artifact: str, file_name: str, what: str, say: Progress) -> Path:
    """A Maven artifact in the cache's downloads, fetched with ``mvn`` once."""
    archive = cache / "downloads" / file_name
    if archive.exists():
        return archive
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            f"Maven ('mvn') is needed once to fetch {what}: install it with "
            "'apt-get install maven' (or 'conda install maven'), "
            f"or put the zip ({artifact}) at {archive}"
        )
    say(f"fetching {what} with Maven (once; cached in {cache})")
    archive.parent.mkdir(parents=True, exist_ok=True)
    command = [mvn, "-q", "-B", "dependency:copy", f"-Dartifact={artifact}",
               f"-DoutputDirectory={archive.parent}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if result.returncode != 0 or not archive.exists():
        tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
        raise StackError(f"Maven could not fetch {what} ({artifact}): " + " | ".join(tail))
    return archive


def find_java(environ: dict[str, str] | None = None) -> Path:
    """A Java 11+ runtime for OpenSearch: OPENSEARCH_JAVA_HOME, then JAVA_HOME, then PATH."""
    env = os.environ if environ is None else environ
    candidates: list[tuple[str, Path]] = []
    for variable in ("OPENSEARCH_JAVA_HOME", "JAVA_HOME"):
        if env.get(variable):
            candidates.append((variable, Path(env[variable]) / "bin" / "java"))
    on_path = shutil.which("java", path=env.get("PATH"))
    if on_path:
        candidates.append(("PATH", Path(on_path)))
    problems = []
    for origin, java in candidates:
        major = _java_major(java)
        if major is None:
            problems.append(f"{origin}: {java} does not run")
        elif not 11 <= major <= 23:
            problems.append(f"{origin}: {java} is Java {major}")
        else:
            return java.resolve().parent.parent
    detail = "; ".join(problems) if problems else "no java on PATH and no JAVA_HOME"
    raise StackError(
        f"OpenSearch needs Java 17 ({detail}). Install it with "
        "'apt-get install openjdk-17-jre-headless' (or 'conda install openjdk=17'), "
        "or point OPENSEARCH_JAVA_HOME at a Java 17 installation"
    )


def _java_major(java: Path) -> int | None:
    try:
        result = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 and match.group(2) else major


# --- starting ------------------------------------------------------------------------------
def _spawn(paths: _Paths, service: str, command: list[str], env: dict[str, str]) -> int:
    log_path = paths.log_file(service)
    with file_errors(f"start {service} with its log in", log_path, error=StackError), \
            open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: down stops the whole tree
        )
    _write_pid(paths.pid_file(service), process.pid, command)
    return process.pid


def _write_pid(path: Path, pid: int, command: list[str]) -> None:
    """The pid with the process's identity (start time, command line): a pid file that
    outlives its process (a reboot, a crash) must not make hrnb signal whoever reuses the pid."""
    import psutil

    identity = {"pid": pid, "create_time": psutil.Process(pid).create_time(), "command": command}
    path.write_text(json.dumps(identity) + "\n")


def _start_aws(settings: Settings, paths: _Paths) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    # hrnb.local.emulator skips moto's Docker attempt for disabled mappings; should a user
    # enable one, an unusable DOCKER_HOST makes that attempt fail at once (hrnb.local.poller runs
    # the function).
    env["DOCKER_HOST"] = "none://"
    env["HRNB_CACHE_DIR"] = str(settings.cache_dir)  # where the emulator keeps deployed code
    command = [sys.executable, "-m", "hrnb.local.emulator", "-H", "127.0.0.1",
               "-p", str(settings.aws_port)]
    if settings.local_security:
        command += ["--front-port", str(settings.opensearch_port),
                    "--node-url", _node_url(settings),
                    "--tls-dir", str(paths.tls), "--region", settings.region]
    _spawn(paths, AWS, command, env)


def _start_opensearch(settings: Settings, paths: _Paths, home: Path) -> None:
    java_home = find_java()
    # Data of one version per directory: a node refuses data an older or newer one wrote.
    data, os_logs, tmp = (paths.state / "opensearch" / d
                          for d in (f"data-{settings.opensearch_version}", "logs", "tmp"))
    for directory in (data, os_logs, tmp):
        with file_errors("create OpenSearch's directory", directory, error=StackError):
            directory.mkdir(parents=True, exist_ok=True)
    heap = settings.opensearch_heap_mb
    env = dict(os.environ)
    env.update(
        OPENSEARCH_JAVA_HOME=str(java_home),
        OPENSEARCH_JAVA_OPTS=f"-Xms{heap}m -Xmx{heap}m",
        OPENSEARCH_TMPDIR=str(tmp),
    )
    if settings.local_security:
        env["OPENSEARCH_PATH_CONF"] = str(_secured_config(settings, paths, home))
    command = [
        str(home / "bin" / "opensearch"),
        "-Ediscovery.type=single-node",
        "-Ecluster.name=hrnb-local",
        "-Enode.name=hrnb-local",
        "-Enetwork.host=127.0.0.1",
        f"-Ehttp.port={settings.resolved_opensearch_node_port}",
        f"-Epath.data={data}",
        f"-Epath.logs={os_logs}",
        # One node on a shared disk: never turn indices read-only over a disk watermark.
        "-Ecluster.routing.allocation.disk.threshold_enabled=false",
    ]
    if os.geteuid() == 0:
        # OpenSearch refuses to run as root. A user namespace gives it an ordinary uid inside
        # while files stay owned by the caller outside; no system user needs creating.
        unshare = shutil.which("unshare")
        if unshare is None:
            raise StackError(
                "OpenSearch refuses to run as root and 'unshare' (util-linux) is missing: "
                "install it with 'apt-get install util-linux' or run hrnb as an ordinary user"
            )
        command = [unshare, "--user", "--map-user=1000", "--map-group=1000", *command]
    _spawn(paths, OPENSEARCH, command, env)


def ensure_local_master_user(settings: Settings) -> MasterUser:
    """The local node's master user, kept as on AWS: a random password in a 0600 file (the one
    set-up reads to configure the security plugin)."""
    master = load_master_user(settings)
    if master is None:
        master = MasterUser(MASTER_USER_NAME, generate_master_password())
        _write_private(master_user_path(settings), json.dumps(
            {"username": master.username, "password": master.password}) + "\n")
    return master


def _secured_config(settings: Settings, paths: _Paths, home: Path) -> Path:
    """The node's configuration directory for this state directory: the distribution's, with TLS
    from the local CA and the security plugin's settings (internal users with the master user,
    basic and proxy authentication, the front's address as the only trusted proxy)."""
    import bcrypt

    config = paths.state / "opensearch" / "config"
    shutil.rmtree(config, ignore_errors=True)
    shutil.copytree(home / "config", config)
    tls = LocalTls(paths.tls)
    for name in (NODE_NAME,):
        shutil.copy(tls.cert(name), config / f"{name}.pem")
        shutil.copy(tls.key(name), config / f"{name}-key.pem")
    shutil.copy(tls.ca, config / "ca.pem")
    for path in config.glob("*-key.pem"):
        path.chmod(0o600)
    node_tls = {
        f"plugins.security.ssl.{layer}.{item}": value
        for layer in ("transport", "http")
        for item, value in (("pemcert_filepath", f"{NODE_NAME}.pem"),
                            ("pemkey_filepath", f"{NODE_NAME}-key.pem"),
                            ("pemtrustedcas_filepath", "ca.pem"))
    }
    node_settings = {
        **node_tls,
        "plugins.security.ssl.http.enabled": True,
        "plugins.security.ssl.transport.enforce_hostname_verification": False,
        "plugins.security.authcz.admin_dn": [LocalTls.dn(ADMIN_NAME)],
        "plugins.security.nodes_dn": [LocalTls.dn(NODE_NAME)],
        "plugins.security.allow_default_init_securityindex": True,
        "plugins.security.restapi.roles_enabled": ["all_access", "security_manager"],
        "plugins.security.audit.type": "noop",
        "plugins.security.system_indices.enabled": True,
    }
    with open(config / "opensearch.yml", "a") as handle:
        handle.write("\n# hrnb: fine-grained access control (hrnb.local.launcher)\n")
        handle.write("".join(f"{key}: {json.dumps(value)}\n"
                             for key, value in node_settings.items()))
    master = ensure_local_master_user(settings)
    password_hash = bcrypt.hashpw(master.password.encode(), bcrypt.gensalt(12, b"2a")).decode()
    security = config / "opensearch-security"
    documents = {
        "config.yml": {"_meta": {"type": "config", "config_version": 2}, "config": {"dynamic": {
            "http": {"anonymous_auth_enabled": False, "xff": {
                "enabled": True, "internalProxies": re.escape(PROXY_ADDRESS),
                "remoteIpHeader": "x-forwarded-for"}},
            "authc": {
                "basic_internal_auth_domain": {
                    "http_enabled": True, "transport_enabled": True, "order": 0,
                    "http_authenticator": {"type": "basic", "challenge": False},
                    "authentication_backend": {"type": "intern"}},
                "proxy_auth_domain": {
                    "http_enabled": True, "transport_enabled": True, "order": 1,
                    "http_authenticator": {"type": "proxy", "challenge": False, "config": {
                        "user_header": USER_HEADER, "roles_header": ROLES_HEADER}},
                    "authentication_backend": {"type": "noop"}},
            },
        }}},
        "internal_users.yml": {
            "_meta": {"type": "internalusers", "config_version": 2},
            master.username: {"hash": password_hash, "reserved": True,
                              "description": "hrnb local master user"},
        },
        "roles_mapping.yml": {
            "_meta": {"type": "rolesmapping", "config_version": 2},
            "all_access": {"reserved": False, "users": [master.username]},
            "security_manager": {"reserved": False, "users": [master.username]},
        },
    }
    for name, document in documents.items():
        # JSON is YAML; the password appears only as its bcrypt hash.
        _write_private(security / name, json.dumps(document, indent=2) + "\n")
    return config


def _poller_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("hrnb.local.poller") is not None


def _start_poller(settings: Settings, paths: _Paths) -> None:
    env = dict(os.environ)
    command = [
        sys.executable, "-m", "hrnb.local.poller",
        "--state-dir", str(paths.state),
        "--aws-endpoint-url", str(settings.resolved_aws_endpoint_url),
        "--region", settings.region,
    ]
    _spawn(paths, POLLER, command, env)
    time.sleep(0.5)
    if _read_pid(paths, POLLER) is None:
        raise StackError(
            f"the event source mapping poller exited at once; see {paths.log_file(POLLER)}"
        )


def _wait_healthy(
    check: Callable[[], ServiceStatus], service: str, paths: _Paths, say: Progress
) -> None:
    deadline = time.monotonic() + _HEALTH_TIMEOUT_S
    last_report = 0.0
    started = time.monotonic()
    while time.monotonic() < deadline:
        current = check()
        if current.healthy:
            say(f"{service} healthy after {time.monotonic() - started:.1f} s")
            return
        if _read_pid(paths, service) is None:
            raise StackError(
                f"{service} exited during start-up; last lines of {paths.log_file(service)}:\n"
                + _tail(paths.log_file(service))
            )
        if time.monotonic() - last_report > 10:
            say(f"waiting for {service} to answer ({time.monotonic() - started:.0f} s)")
            last_report = time.monotonic()
        time.sleep(0.5)
    raise StackError(
        f"{service} did not become healthy within {_HEALTH_TIMEOUT_S:.0f} s; "
        f"see {paths.log_file(service)}:\n" + _tail(paths.log_file(service))
    )


def _check_port_free(port: int, what: str, variable: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise StackError(
                f"port {port} is busy with a program that is not {what}; stop it or choose "
                f"another port with {variable}=<port>"
            ) from None


# --- stopping ------------------------------------------------------------------------------
def _stop_services(paths: _Paths, names: list[str], say: Progress | None = None) -> list[str]:
    stopped = []
    for name in names:
        pid = _read_pid(paths, name)
        if pid is None:
            continue
        if say:
            say(f"stopping {name} (pid {pid})")
        stop_process_group(pid)
        paths.pid_file(name).unlink(missing_ok=True)
        stopped.append(name)
    return stopped


def stop_process_group(pid: int, timeout_s: float = 30.0) -> None:
    """SIGTERM the process group led by ``pid`` (started with ``start_new_session``), wait until
    every member is gone (children such as a Lambda worker included), SIGKILL what lingers."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _group_alive(pid):
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while _group_alive(pid):
        time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    _reap(pgid)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# --- status ----------------------------------------------------------------------------------
def _read_pid(paths: _Paths, service: str) -> int | None:
    """The pid hrnb recorded for ``service`` if that very process still runs: same start time
    as recorded (a reused pid, or a pid file without an identity, is someone else's; zombies
    count as gone). Checked before any signal and by ``status``."""
    import psutil

    path = paths.pid_file(service)
    try:
        with file_errors("read the pid file", path, error=StackError):
            text = path.read_text()
    except StackError as exc:
        if exc.code == "ENOENT":  # nothing recorded: hrnb did not start it
            return None
        raise
    try:
        identity = json.loads(text)
        pid, started = int(identity["pid"]), float(identity["create_time"])
    except (ValueError, TypeError, KeyError):
        log.warning("%s has no process identity (an older or foreign pid file); ignored", path)
        return None
    _reap(pid)
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        if abs(process.create_time() - started) > 0.05:
            log.warning("%s names pid %d, now another process (started %s, not %s); ignored",
                           path, pid, process.create_time(), started)
            return None
    except psutil.Error:
        return None
    return pid


def _rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        import psutil

        root = psutil.Process(pid)
        total = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
    except Exception:
        return None
    return round(total / 2**20, 1)


def _http_json(url: str, timeout: float = 2.0, *, settings: Settings | None = None
               ) -> object | None:
    """GET ``url`` as JSON; with ``settings`` of a secured stack, as its master user over TLS
    verified against the local CA."""
    request = urllib.request.Request(url)
    context = None
    if settings is not None and settings.local_security:
        master = load_master_user(settings)
        if master is None or not settings.local_ca_path.exists():
            return None
        token = base64.b64encode(f"{master.username}:{master.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        context = ssl.create_default_context(cafile=str(settings.local_ca_path))
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return json.loads(response.read() or b"null")
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _aws_status(settings: Settings, paths: _Paths) -> ServiceStatus:
    url = settings.resolved_aws_endpoint_url
    pid = _read_pid(paths, AWS)
    healthy, version = False, None
    try:
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=2.0) as response:
            healthy = response.status == 200
    except (urllib.error.URLError, OSError):
        pass
    if healthy:
        from importlib.metadata import version as package_version

        version = f"moto {package_version('moto')}"
    return ServiceStatus(
        name=AWS, url=url, healthy=healthy, pid=pid, managed=pid is not None,
        log_path=str(paths.log_file(AWS)), version=version, rss_mb=_rss_mb(pid),
        detail="Kinesis, IAM, STS, Lambda, OpenSearch Service, CloudWatch Logs",
    )


def _node_url(settings: Settings) -> str:
    """The node itself: behind the SigV4 front when secured, else the endpoint."""
    if settings.local_security:
        return f"https://127.0.0.1:{settings.resolved_opensearch_node_port}"
    return str(settings.resolved_opensearch_url)


def _opensearch_status(settings: Settings, paths: _Paths) -> ServiceStatus:
    """The node's health, asked of the node: the front lives in the emulator's process, so an
    emulator restart must not make a running node look stopped."""
    url = settings.resolved_opensearch_url
    pid = _read_pid(paths, OPENSEARCH)
    node = _node_url(settings)
    health = _http_json(f"{node}/_cluster/health", settings=settings)
    root = _http_json(f"{node}/", settings=settings) if health else None
    healthy = isinstance(health, dict) and health.get("status") in ("green", "yellow")
    version = None
    if isinstance(root, dict):
        version = root.get("version", {}).get("number")
    detail = f"cluster {health.get('status')}" if isinstance(health, dict) else ""
    if settings.local_security:
        detail += (f"; security plugin, TLS; SigV4 front {url} -> node port "
                   f"{settings.resolved_opensearch_node_port}")
    return ServiceStatus(
        name=OPENSEARCH, url=url, healthy=healthy, pid=pid, managed=pid is not None,
        log_path=str(paths.log_file(OPENSEARCH)), version=version, rss_mb=_rss_mb(pid),
        detail=detail,
    )


def _poller_status(settings: Settings, paths: _Paths) -> ServiceStatus:
    pid = _read_pid(paths, POLLER)
    detail = ""
    if _poller_available():
        from hrnb.local import poller
        from hrnb.provision.state import read_esm_status

        report = read_esm_status(paths.state)
        if report is not None:
            detail = "\n".join(poller.status_lines(report))  # type: ignore[arg-type]
    return ServiceStatus(
        name=POLLER, url=None, healthy=pid is not None, pid=pid, managed=pid is not None,
        log_path=str(paths.log_file(POLLER)), rss_mb=_rss_mb(pid), detail=detail,
    )


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
