"""Every error hrnb raises, in one hierarchy (stdlib only: this module ships in the Lambda zip).

    HrnbError
    ├── ConfigError          a setting or CLI flag is invalid
    ├── MeasurementError     bytes from a watch are not a valid 0x2A37 payload (also a ValueError)
    ├── RecordError          a wire record is invalid (also a ValueError)
    ├── ServiceError         talking to AWS, OpenSearch, the radio or a file failed
    │   ├── SourceError          a heart-rate source cannot deliver
    │   │   ├── BluetoothUnavailableError   no BlueZ / D-Bus reachable
    │   │   ├── DeviceNotFoundError         no watch advertising 0x180D matched
    │   │   ├── LinkError                   connecting to / setting up a watch failed
    │   │   └── ReplayError                 a FIT/CSV file cannot be read
    │   ├── ProducerError        streaming to Kinesis failed for good
    │   │   └── SpoolFullError   the on-disk spool reached its bound
    │   ├── StackError           the embedded local stack cannot start or answer
    │   ├── ProvisionError       a set-up / teardown step failed (names the resource)
    │   ├── QueryError           an OpenSearch query failed
    │   ├── StorageError         a local file or directory cannot be read or written
    │   └── ExportError          a chart cannot be exported (PNG needs Chromium)
    ├── PackagingError       the Lambda zips cannot be built or break Lambda's limits
    └── NotebookError        a notebook cell failed when run headless

Context lives in named attributes; messages say what was wrong and what to do. Foreign errors
(botocore, opensearch-py, Bleak, OSError) become ServiceErrors in :mod:`hrnb.boundary`, which
fills ``.service``, ``.action``, ``.code`` and ``.resource``.
"""

from __future__ import annotations


class HrnbError(Exception):
    """Base of every hrnb error."""


class ConfigError(HrnbError, ValueError):
    """A setting, environment variable or CLI flag is invalid."""

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class MeasurementError(HrnbError, ValueError):
    """A Heart Rate Measurement payload is malformed; `.data` holds the bytes."""

    def __init__(self, message: str, *, data: bytes = b"") -> None:
        super().__init__(f"{message} (payload: {data.hex(' ') or 'empty'})")
        self.data = bytes(data)


class RecordError(HrnbError, ValueError):
    """A wire record is invalid; `.field` names the offending field (None: the whole record)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ServiceError(HrnbError):
    """Talking to something outside hrnb failed.

    ``.service``: what hrnb talked to ("kinesis", "opensearch", "bluetooth", "file", ...);
    ``.action``: what it was doing, in words ("create", "search", "write");
    ``.code``: the foreign error code (an AWS error code, an HTTP status, an errno name or an
    exception name); ``.resource``: the stream, index, device or path concerned. Any may be None.
    """

    def __init__(self, message: str, *, service: str | None = None, action: str | None = None,
                 code: str | None = None, resource: str | None = None) -> None:
        super().__init__(message)
        self.service = service
        self.action = action
        self.code = code
        self.resource = resource


class SourceError(ServiceError):
    """A heart-rate source cannot deliver samples."""


class BluetoothUnavailableError(SourceError):
    """No Bluetooth stack (BlueZ over D-Bus) is reachable from this machine."""


class DeviceNotFoundError(SourceError):
    """No device advertising the Heart Rate service matched the request."""


class LinkError(SourceError):
    """Connecting to a watch, or setting up its notifications, failed (retried after a dropout)."""


class ReplayError(SourceError):
    """A recorded session (FIT or CSV) cannot be read; `.path` (also `.resource`) names the file
    and `.position` the place in it (``line 7``, ``record 12``), when one is to blame."""

    def __init__(self, message: str, *, path: str | None = None, position: str | None = None,
                 **context: str | None) -> None:
        context = {"service": "file", **context}
        context["resource"] = path = path or context.get("resource")
        super().__init__(message, **context)
        self.path = path
        self.position = position


class ProducerError(ServiceError):
    """Streaming to Kinesis failed in a way retries cannot fix."""


class SpoolFullError(ProducerError):
    """The on-disk spool reached its size bound; nothing was discarded."""


class StackError(ServiceError):
    """The embedded local stack cannot start, stop or answer."""


class ProvisionError(ServiceError):
    """A provisioning step failed; `.resource` names what it was working on."""


class QueryError(ServiceError):
    """An OpenSearch query failed; `.resource` names the index."""


class StorageError(ServiceError):
    """A local file or directory cannot be read or written; `.resource` is its path."""


class PackagingError(HrnbError):
    """The Lambda zips cannot be built or break Lambda's size limits; `.artifact` names the file."""

    def __init__(self, message: str, *, artifact: str | None = None) -> None:
        super().__init__(message)
        self.artifact = artifact


class NotebookError(HrnbError):
    """A notebook cell failed when run headless; `.notebook` is the executed copy."""

    def __init__(self, message: str, *, notebook: str | None = None) -> None:
        super().__init__(message)
        self.notebook = notebook


class ExportError(ServiceError):
    """A chart cannot be exported (e.g. no Chromium for PNG); `.path` (also `.resource`) names
    the target file."""

    def __init__(self, message: str, *, path: str | None = None, **context: str | None) -> None:
        context["resource"] = path = path or context.get("resource")
        super().__init__(message, **context)
        self.path = path
