"""The set-up state file and the domain's master user (a random password in a 0600 file,
never logged)."""

from __future__ import annotations

import json
import logging
import os
import secrets
import string
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hrnb.boundary import file_errors
from hrnb.config import Settings
from hrnb.errors import ProvisionError

log = logging.getLogger(__name__)


MASTER_USER_NAME = "hrnb-admin"


@dataclass(frozen=True)
class MasterUser:
    """The domain's internal master user. The password never appears in a repr or a log."""

    username: str
    password: str = field(repr=False)


# --- local state: resumable waits and the master user ------------------------------------------
class StateFile:
    """Small JSON file per target and prefix in ``settings.state_dir``: where set-up was done and
    whether a domain creation is still pending, so an interrupted kernel can resume the wait."""

    def __init__(self, settings: Settings) -> None:
        self.path = settings.state_dir / f"provision-{settings.target}-{settings.prefix}.json"

    def load(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ProvisionError(f"state file {self.path} is unreadable ({exc}); delete it and "
                                 "run set-up again", resource=str(self.path)) from None

    def update(self, **changes: Any) -> None:
        state = {**self.load(), **changes}
        with file_errors("write the state file", self.path, error=ProvisionError):
            _write_private(self.path, json.dumps(state, indent=2, sort_keys=True) + "\n")

    def delete(self) -> None:
        with file_errors("delete the state file", self.path, error=ProvisionError):
            self.path.unlink(missing_ok=True)


def local_prefixes(state_dir: Path) -> list[str]:
    """Every prefix set up on the local target with this state directory (its state files):
    the prefixes whose triggers the local poller of this state directory serves."""
    stem = "provision-local-"
    return sorted(path.name[len(stem):-len(".json")]
                  for path in state_dir.glob(f"{stem}*.json"))


def esm_status_path(state_dir: Path) -> Path:
    """Where the local poller of this state directory reports its mappings."""
    return state_dir / "esm" / "status.json"


def read_esm_status(state_dir: Path) -> dict[str, Any] | None:
    """The last status the local poller wrote, or None if none ever ran here."""
    try:
        return json.loads(esm_status_path(state_dir).read_text())
    except FileNotFoundError:
        return None
    except ValueError:  # written atomically; unreadable only if edited by hand
        return None


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (0600), atomically, in a 0700 directory."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def master_user_path(settings: Settings) -> Path:
    """Where the domain's master user name and password live (mode 0600). The local stack has one
    node for every prefix, so one master user."""
    if settings.is_local:
        return settings.local_stack_dir / "opensearch-master-local.json"
    return settings.state_dir / f"opensearch-master-{settings.target}-{settings.prefix}.json"


def generate_master_password(length: int = 32) -> str:
    """A random password meeting AWS's rule: upper and lower case, a digit, a special sign."""
    specials = "-_.!#%^*+="
    alphabet = string.ascii_letters + string.digits + specials
    classes = (string.ascii_lowercase, string.ascii_uppercase, string.digits, specials)
    while True:
        password = "".join(secrets.choice(alphabet) for _ in range(length))
        if all(any(char in chars for char in password) for chars in classes):
            return password


def load_master_user(settings: Settings) -> MasterUser | None:
    """The stored master user, or None when set-up has not created one."""
    path = master_user_path(settings)
    try:
        if path.stat().st_mode & 0o077:
            log.warning("%s was readable by others; restricting it to its owner (0600)", path)
            path.chmod(0o600)
        data = json.loads(path.read_text())
        return MasterUser(username=data["username"], password=data["password"])
    except FileNotFoundError:
        return None
    except (OSError, KeyError, TypeError, ValueError):
        raise ProvisionError(f"master user file {path} is unreadable; restore it or reset the "
                             "password in the AWS console", resource=str(path)) from None


def _create_master_user(settings: Settings) -> MasterUser:
    user = MasterUser(MASTER_USER_NAME, generate_master_password())
    with file_errors("store the master user in", master_user_path(settings),
                     error=ProvisionError):
        _write_private(master_user_path(settings),
                       json.dumps({"username": user.username, "password": user.password}) + "\n")
    log.info("stored a new master user for domain %s in %s", settings.domain_name,
             master_user_path(settings))
    return user


class _DropSecret(logging.Filter):
    """Drops log records that would carry a secret."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        return self.secret not in record.getMessage()


@contextmanager
def _kept_out_of_logs(secret: str | None) -> Iterator[None]:
    """botocore logs every request's parameters and response body at DEBUG (``hrnb -v``), and
    the emulator echoes the master password back; while a call carries it, such records are
    dropped."""
    if secret is None:
        yield
        return
    drop = _DropSecret(secret)
    loggers = [logging.getLogger(name) for name in ("botocore.endpoint", "botocore.parsers")]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)

