"""Where foreign errors become hrnb's: one context manager per kind of outside world.

::

    with aws_errors(ProvisionError, "kinesis", "create", "stream hrnb-hr-stream"):
        client.create_stream(...)

turns every botocore failure in the block into a ``ProvisionError`` whose message names the
resource and what to do, with ``.service``, ``.action``, ``.code`` and ``.resource`` filled in
(httpx's ``map_exceptions`` is the model). :func:`opensearch_errors`, :func:`bleak_errors` and
:func:`file_errors` do the same for opensearch-py, Bleak and the file system. hrnb's own errors
pass through untouched. Each foreign library is imported only when its errors are mapped, so
importing this module costs nothing (and :mod:`hrnb.errors` stays stdlib-only for the Lambda).
"""

from __future__ import annotations

import contextlib
import errno
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from hrnb.errors import BluetoothUnavailableError, ServiceError, SourceError, StorageError

E = TypeVar("E", bound=ServiceError)

#: AWS error codes that mean "the identity may not do this".
DENIED_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError"}
)
#: AWS error codes that mean "these credentials are not valid here".
CREDENTIAL_CODES = frozenset(
    {"UnrecognizedClientException", "InvalidClientTokenId", "InvalidSignatureException",
     "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException"}
)
#: D-Bus errors that mean BlueZ itself is not there (as opposed to one device missing).
_NO_BLUEZ_DBUS_ERRORS = frozenset({
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
    "org.freedesktop.DBus.Error.AccessDenied",
})


def _what(action: str, resource: str | None) -> str:
    return f"cannot {action} {resource}" if resource else f"cannot {action}"


# --- AWS (botocore) ------------------------------------------------------------------------------
@contextlib.contextmanager
def aws_errors(error: type[E], service: str, action: str,
               resource: str | None = None) -> Iterator[None]:
    """botocore's errors in the block become ``error``: refused or missing credentials, a
    missing permission (naming the IAM action AWS reports), an unreachable endpoint, or any
    other AWS error with its code."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise aws_error(exc, error, service, action, resource) from exc


def aws_error(exc: BaseException, error: type[E], service: str, action: str,
              resource: str | None = None) -> E:
    """One botocore exception as ``error`` (for code that must look at the exception first,
    such as a retry policy); :func:`aws_errors` is the usual way in."""
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return _botocore_error(exc, error, service, action, resource)
    response = getattr(exc, "response", {}) or {}
    details = response.get("Error", {})
    code = str(details.get("Code", "")) or type(exc).__name__
    message = str(details.get("Message", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    what = _what(action, resource)
    context = {"service": service, "action": action, "code": code, "resource": resource}
    if code in CREDENTIAL_CODES:
        return error(
            f"{what}: the AWS credentials were refused ({code}). Check them ('aws sts "
            "get-caller-identity') and that the region is enabled for the account", **context)
    if code in DENIED_CODES or status == 403:
        denied = _denied_action(message) or code
        return error(
            f"{what}: permission missing ({denied}). Give the identity the permissions listed "
            "in docs/operations.md", **context)
    return error(f"{what}: {code}: {message}", **context)


def _botocore_error(exc: BaseException, error: type[E], service: str, action: str,
                    resource: str | None) -> E:
    from botocore.exceptions import (
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    what = _what(action, resource)
    context = {"service": service, "action": action, "code": type(exc).__name__,
               "resource": resource}
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return error(f"{what}: no AWS credentials found (configure them with 'aws configure' "
                     "or AWS_PROFILE)", **context)
    if isinstance(exc, NoRegionError):
        return error(f"{what}: no AWS region (set HRNB_REGION)", **context)
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError):
        endpoint = getattr(exc, "kwargs", {}).get("endpoint_url", "the endpoint")
        return error(
            f"{what}: {service} does not answer at {endpoint}. On the local target run 'hrnb "
            "local up'; on AWS check the region and the network", **context)
    return error(f"{what}: {exc}. On the local target run 'hrnb local up'; on AWS check the "
                 "region and the network", **context)


def _denied_action(message: str) -> str | None:
    """The IAM action an AccessDenied message names (``kinesis:CreateStream``), if any."""
    found = re.search(r"not authorized to perform: ([\w-]+:[\w*]+)", message)
    return found.group(1) if found else None


# --- OpenSearch (opensearch-py) ------------------------------------------------------------------
@contextlib.contextmanager
def opensearch_errors(error: type[E], action: str, resource: str | None = None, *,
                      missing: str | None = None) -> Iterator[None]:
    """opensearch-py's errors in the block become ``error``: not found (``missing`` says what
    to do about it), unreachable, refused credentials, or a rejected request with its status
    and OpenSearch's reason. ``.code`` is the HTTP status, or the exception name without one."""
    from opensearchpy.exceptions import ConnectionError as OSConnectionError
    from opensearchpy.exceptions import NotFoundError, OpenSearchException, TransportError

    what = _what(action, resource)
    try:
        yield
    except NotFoundError as exc:
        raise error(f"{what}: not found" + (f"; {missing}" if missing else ""),
                    service="opensearch", action=action, code="404",
                    resource=resource) from exc
    except OSConnectionError as exc:
        raise error(
            f"{what}: OpenSearch does not answer ({exc.info or exc.error}). On the local target "
            "run 'hrnb local up' ('hrnb local status' shows it)", service="opensearch",
            action=action, code=type(exc).__name__, resource=resource) from exc
    except TransportError as exc:
        status = exc.status_code
        context = {"service": "opensearch", "action": action, "code": str(status),
                   "resource": resource}
        if status in (401, 403):
            raise error(f"{what}: OpenSearch refused the request ({status}); check the "
                        "credentials (the master user is in the state directory)",
                        **context) from exc
        info = json.dumps(exc.info, default=str)[:500] if exc.info else ""
        raise error(f"{what}: OpenSearch rejected it (HTTP {status}): {exc.error} {info}"
                    .rstrip(), **context) from exc
    except OpenSearchException as exc:
        raise error(f"{what}: OpenSearch failed ({exc})", service="opensearch", action=action,
                    code=type(exc).__name__, resource=resource) from exc


# --- the radio (Bleak) ---------------------------------------------------------------------------
def bluetooth_unavailable(exc: BaseException) -> BluetoothUnavailableError | None:
    """The hrnb error for a Bleak failure that means "no Bluetooth stack here", else None.

    Without BlueZ's D-Bus socket Bleak raises a bare FileNotFoundError (ConnectionRefusedError
    when the socket is stale); with D-Bus but no bluetoothd, a D-Bus ServiceUnknown error.
    """
    from bleak.exc import BleakBluetoothNotAvailableError, BleakDBusError

    if isinstance(exc, BleakDBusError):
        if exc.dbus_error not in _NO_BLUEZ_DBUS_ERRORS:
            return None
    elif not isinstance(
        exc, FileNotFoundError | ConnectionRefusedError | BleakBluetoothNotAvailableError
    ):
        return None
    return BluetoothUnavailableError(
        f"No Bluetooth stack is reachable ({type(exc).__name__}: {exc or 'no detail'}). "
        "Bleak needs BlueZ running over the system D-Bus and a powered Bluetooth adapter: "
        "start it (e.g. `sudo systemctl start bluetooth`), or run without a watch using "
        "`--source simulated` (or `--source emulated`).",
        service="bluetooth", code=type(exc).__name__,
    )


@contextlib.contextmanager
def bleak_errors(action: str, resource: str | None = None, *,
                 error: type[SourceError] = SourceError) -> Iterator[None]:
    """Bleak's errors and the OSErrors of its D-Bus link become BluetoothUnavailableError
    (no Bluetooth stack at all) or ``error`` naming the device and what was being done."""
    from bleak.exc import BleakError

    try:
        yield
    except (BleakError, OSError) as exc:
        unavailable = bluetooth_unavailable(exc)
        if unavailable is not None:
            unavailable.action, unavailable.resource = action, resource
            raise unavailable from exc
        raise error(f"{_what(action, resource)}: {exc or type(exc).__name__}",
                    service="bluetooth", action=action, code=type(exc).__name__,
                    resource=resource) from exc


# --- files ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def file_errors(action: str, path: str | Path, *,
                error: type[E] = StorageError) -> Iterator[None]:  # type: ignore[assignment]
    """OSErrors in the block become ``error`` naming the path, the errno and what to do."""
    try:
        yield
    except OSError as exc:
        code = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        reason = exc.strerror or str(exc) or type(exc).__name__
        culprit = exc.filename if exc.filename not in (None, str(path)) else None
        raise error(
            f"cannot {action} {path}: {reason}" + (f" ({culprit})" if culprit else ""),
            service="file", action=action, code=code, resource=str(path)) from exc
