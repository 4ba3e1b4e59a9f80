"""Every error hrnb raises, in one hierarchy (stdlib only: this module ships in the Lambda zip).

    HrnbError
    ├── ConfigError          a setting or CLI flag is invalid
    ├── MeasurementError     bytes from a watch are not a valid 0x2A37 payload (also a ValueError)
    ├── RecordError          a wire record is invalid (also a ValueError)
    ├── SourceError          a heart-rate source cannot deliver
    │   ├── BluetoothUnavailableError   no BlueZ / D-Bus reachable
    │   ├── DeviceNotFoundError         no watch advertising 0x180D matched
    │   └── ReplayError                 a FIT/CSV file cannot be read
    ├── ProducerError        streaming to Kinesis failed for good
    │   └── SpoolFullError   the on-disk spool reached its bound
    ├── StackError           the embedded local stack cannot start or answer
    ├── ProvisionError       a set-up / teardown step failed (names the resource)
    ├── QueryError           an OpenSearch query failed
    └── PackagingError       the Lambda zips cannot be built or break Lambda's limits

Context lives in named attributes; messages say what was wrong and what to do.
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


class SourceError(HrnbError):
    """A heart-rate source cannot deliver samples."""


class BluetoothUnavailableError(SourceError):
    """No Bluetooth stack (BlueZ over D-Bus) is reachable from this machine."""


class DeviceNotFoundError(SourceError):
    """No device advertising the Heart Rate service matched the request."""


class ReplayError(SourceError):
    """A recorded session (FIT or CSV) cannot be read; `.path` names the file and `.position`
    the place in it (``line 7``, ``record 12``), when one is to blame."""

    def __init__(self, message: str, *, path: str | None = None,
                 position: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.position = position


class ProducerError(HrnbError):
    """Streaming to Kinesis failed in a way retries cannot fix."""


class SpoolFullError(ProducerError):
    """The on-disk spool reached its size bound; nothing was discarded."""


class StackError(HrnbError):
    """The embedded local stack cannot start, stop or answer."""


class ProvisionError(HrnbError):
    """A provisioning step failed; `.resource` names what it was working on."""

    def __init__(self, message: str, *, resource: str | None = None) -> None:
        super().__init__(message)
        self.resource = resource


class QueryError(HrnbError):
    """An OpenSearch query failed."""


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


class ExportError(HrnbError):
    """A chart cannot be exported (e.g. no Chromium for PNG); `.path` names the target file."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path
