"""A long-lived process that runs the deployed Lambda handler exactly as packaged.

The local event source mapping (``hrnb.local.poller``) plays the Lambda service; this module
plays one execution environment. :class:`LambdaWorker` starts ``python -I -S`` on this very file
with only
the unpacked function zip on ``sys.path`` (like ``/var/task``), so a module missing from the zip
fails locally as it would on AWS. The handler module is
imported at the first invocation (Lambda's init phase) and reused by later ones, so anything the
handler caches per container is cached here too.

The two processes speak JSON lines over the child's stdin and a private copy of its stdout; the
handler's own stdout and stderr (its logs) go to a log file, as Lambda sends them to CloudWatch.
A handler that raises, times out or kills its process yields an :class:`InvokeResult` with an
error, as a Lambda invocation would; the next invocation starts a fresh process.

Stdlib only: the child side runs without hrnb or any site-packages.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

#: Lambda caps a synchronous invocation's response at 6 MB.
MAX_RESPONSE_BYTES = 6 * 1024 * 1024


@dataclass(frozen=True)
class FunctionSpec:
    """What one execution environment runs: unpacked code, interpreter, settings."""

    function_name: str
    function_arn: str
    handler: str  # "module.function"
    task_root: Path  # the unpacked function zip
    python: str = sys.executable
    environment: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 3.0
    memory_mb: int = 128
    version: str = "$LATEST"


@dataclass(frozen=True)
class InvokeResult:
    """One invocation's outcome: a payload, or a Lambda-style error (errorType/errorMessage)."""

    request_id: str
    duration_ms: float
    payload: Any = None
    error: Mapping[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def find_runtime_python(runtime: str) -> str | None:
    """A working interpreter for a Lambda runtime name (``python3.12``), on PATH or under pyenv."""
    if not runtime.startswith("python"):
        return None
    version = runtime.removeprefix("python")
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    installed = sorted(
        pyenv_root.glob(f"versions/{version}.*/bin/{runtime}"),
        key=lambda p: tuple(int(x) for x in p.parent.parent.name.split(".") if x.isdigit()),
        reverse=True,
    )
    candidates = [shutil.which(runtime), *map(str, installed)]
    for candidate in candidates:
        if candidate and _runs_version(candidate, version):
            return candidate
    return None


def _runs_version(python: str, version: str) -> bool:
    """True when ``python`` starts in isolated mode and is that version (pyenv shims may not)."""
    probe = "import sys; print('%d.%d' % sys.version_info[:2])"
    try:
        done = subprocess.run([python, "-I", "-S", "-c", probe], capture_output=True, text=True,
                              timeout=10, env={"PATH": os.environ.get("PATH", "")})
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.strip() == version


class LambdaWorker:
    """Runs invocations in a child process, restarting it after a crash, timeout or init error."""

    def __init__(self, spec: FunctionSpec, *, log_path: Path) -> None:
        self.spec = spec
        self.log_path = log_path
        self.restarts = 0  # processes started after the first
        self._started = False
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._buffer = b""

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def invoke(self, event: Mapping[str, Any]) -> InvokeResult:
        """Run the handler on ``event`` and wait at most the function's timeout."""
        process = self._ensure_started()
        request_id = str(uuid.uuid4())
        started = time.monotonic()
        deadline_ms = int(time.time() * 1000 + self.spec.timeout_s * 1000)
        message = json.dumps({
            "request_id": request_id,
            "function_arn": self.spec.function_arn,
            "deadline_ms": deadline_ms,
            "event": event,
        }).encode()
        try:
            assert process.stdin is not None
            process.stdin.write(message + b"\n")
            process.stdin.flush()
            line = self._read_line(started + self.spec.timeout_s)
        except BrokenPipeError:
            line = b""
        duration_ms = (time.monotonic() - started) * 1000
        if not line:
            return InvokeResult(request_id, duration_ms,
                                error=self._lost(process, timed_out=line is None))
        reply = json.loads(line)
        if reply.get("exiting"):  # a failed init: this environment is discarded
            self.close()
        return InvokeResult(request_id, duration_ms, payload=reply.get("payload"),
                            error=reply.get("error"))

    def close(self) -> None:
        """Stop the child (it exits on end of input; killed if it does not within 5 s)."""
        process, self._process = self._process, None
        if process is not None:
            if process.stdin is not None:
                process.stdin.close()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LambdaWorker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _ensure_started(self) -> subprocess.Popen[bytes]:
        if self._process is not None and self._process.poll() is None:
            return self._process
        self.close()
        if self._started:
            self.restarts += 1
        self._started = True
        spec = self.spec
        args = [spec.python, "-I", "-S", str(Path(__file__).resolve()),
                "--handler", spec.handler, "--task-root", str(spec.task_root)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the child
        self._buffer = b""
        self._process = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=dict(self._environment()),
            cwd=spec.task_root,
        )
        return self._process

    def _environment(self) -> Mapping[str, str]:
        """The variables Lambda sets, then the function's own (credentials come with those)."""
        spec = self.spec
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "LAMBDA_TASK_ROOT": str(spec.task_root),
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{Path(spec.python).name}",
            "AWS_LAMBDA_FUNCTION_NAME": spec.function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": spec.version,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.function_name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": self.log_path.name,
            **spec.environment,
        }

    def _read_line(self, deadline: float) -> bytes | None:
        """One reply line; b"" if the child exits first, None if the deadline passes first."""
        assert self._process is not None and self._process.stdout is not None
        fd = self._process.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    return None
                chunk = os.read(fd, 65536)
                if not chunk:
                    return b""
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _lost(self, process: subprocess.Popen[bytes], *, timed_out: bool) -> Mapping[str, Any]:
        """Kill a child that timed out, reap one that died, and describe it as Lambda would."""
        if timed_out:
            process.kill()
        try:
            code = process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        self.close()
        if timed_out:
            return {"errorType": "Sandbox.Timedout",
                    "errorMessage": f"Task timed out after {self.spec.timeout_s:.2f} seconds"}
        return {"errorType": "Runtime.ExitError",
                "errorMessage": f"Runtime exited with exit status {code}"}


# ---- the child side: runs under `python -I -S`, with nothing but the zips on sys.path ---------


class _Context:
    """The Lambda context object handed to the handler."""

    def __init__(self, request: Mapping[str, Any]) -> None:
        env = os.environ
        self.aws_request_id = request["request_id"]
        self.invoked_function_arn = request["function_arn"]
        self.function_name = env["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = env["AWS_LAMBDA_FUNCTION_VERSION"]
        self.memory_limit_in_mb = env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]
        self.log_group_name = env["AWS_LAMBDA_LOG_GROUP_NAME"]
        self.log_stream_name = env["AWS_LAMBDA_LOG_STREAM_NAME"]
        self.identity = None
        self.client_context = None
        self._deadline_ms = request["deadline_ms"]

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


def _error(exc: BaseException, error_type: str | None = None, message: str | None = None
           ) -> dict[str, Any]:
    import traceback

    return {
        "errorType": error_type or type(exc).__name__,
        "errorMessage": message or str(exc),
        "stackTrace": traceback.format_exception(exc)[1:],
    }


def _load_handler(handler_name: str) -> Any:
    import importlib

    module_name, _, function_name = handler_name.rpartition(".")
    return getattr(importlib.import_module(module_name), function_name)


def _init_error(handler_name: str, exc: Exception) -> dict[str, Any]:
    module_name = handler_name.rpartition(".")[0]
    if isinstance(exc, AttributeError):
        return _error(exc, "Runtime.HandlerNotFound", f"Handler '{handler_name}' missing: {exc}")
    return _error(exc, "Runtime.ImportModuleError",
                  f"Unable to import module '{module_name}': {exc}")


def _run(handler: Any, request: Mapping[str, Any]) -> bytes:
    """Call the handler; the JSON reply line (payload or Lambda-style error)."""
    try:
        payload = handler(request["event"], _Context(request))
    except Exception as exc:
        return json.dumps({"error": _error(exc)}).encode()
    try:
        encoded = json.dumps({"payload": payload}).encode()
    except (TypeError, ValueError) as exc:
        return json.dumps({"error": _error(exc, "Runtime.MarshalError")}).encode()
    if len(encoded) > MAX_RESPONSE_BYTES:
        return json.dumps({"error": {
            "errorType": "Function.ResponseSizeTooLarge",
            "errorMessage": f"Response payload size ({len(encoded)} bytes) exceeded maximum "
                            f"allowed payload size ({MAX_RESPONSE_BYTES} bytes).",
        }}).encode()
    return encoded


def _log(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _serve(handler_name: str, task_root: str) -> int:
    import resource

    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # the handler's prints and logs go to the log, never into the protocol
    sys.path.insert(0, task_root)  # /var/task
    version = os.environ["AWS_LAMBDA_FUNCTION_VERSION"]
    handler = None
    for line in sys.stdin.buffer:
        request = json.loads(line)
        request_id = request["request_id"]
        _log(f"START RequestId: {request_id} Version: {version}")
        started = time.monotonic()
        init_failed = False
        if handler is None:
            try:
                handler = _load_handler(handler_name)  # Lambda's init phase
            except Exception as exc:
                reply = json.dumps({"error": _init_error(handler_name, exc),
                                    "exiting": True}).encode()
                init_failed = True
        if not init_failed:
            reply = _run(handler, request)
        duration_ms = (time.monotonic() - started) * 1000
        max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        _log(f"END RequestId: {request_id}")
        _log(f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
             f"Memory Size: {os.environ['AWS_LAMBDA_FUNCTION_MEMORY_SIZE']} MB\t"
             f"Max Memory Used: {max_rss_mb} MB")
        replies.write(reply + b"\n")
        replies.flush()
        if init_failed:
            return 1  # Lambda discards an environment whose init failed
    return 0


def _main(argv: Sequence[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="one Lambda execution environment (internal)")
    parser.add_argument("--handler", required=True)
    parser.add_argument("--task-root", required=True)
    args = parser.parse_args(argv)
    return _serve(args.handler, args.task_root)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
