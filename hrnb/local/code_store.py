"""The local code store: every zip the emulator was given, kept by sha256 and unpacked once, as
Lambda keeps /var/task.

The emulator writes each function zip here as it receives it (:mod:`hrnb.local.emulator`),
so provisioning uploads code exactly as on AWS and never learns the stack is local. The store is
content-addressed, so it lives in the cache directory and every local stack and poller may share it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import shutil
import zipfile
from pathlib import Path

from hrnb.errors import StackError


def code_store(cache_dir: Path) -> Path:
    return cache_dir / "lambda-code"


def store_local_code(cache_dir: Path, zip_bytes: bytes) -> Path:
    """Keep a function zip where the poller finds it by its sha256; returns the path."""
    digest = hashlib.sha256(zip_bytes).hexdigest()
    path = code_store(cache_dir) / f"{digest}.zip"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{digest}.{os.getpid()}.tmp")
        tmp.write_bytes(zip_bytes)
        os.replace(tmp, path)
    return path


def unpacked_code(cache_dir: Path, code_sha256: str) -> Path:
    """The directory holding the zip whose CodeSha256 (base64, as Lambda reports it) is given.

    The zip is checked against the digest before it is unpacked, once, like /var/task or /opt.
    """
    try:
        digest = base64.b64decode(code_sha256, validate=True).hex()
    except (binascii.Error, ValueError):
        raise StackError(f"CodeSha256 {code_sha256!r} is not base64") from None
    if len(digest) != 64:
        raise StackError(f"CodeSha256 {code_sha256!r} is not a sha256 digest")
    store = code_store(cache_dir)
    target = store / digest
    if target.is_dir():
        return target
    archive = store / f"{digest}.zip"
    if not archive.exists():
        raise StackError(
            f"no local copy of the code with sha256 {digest} in {store}: deploy it with "
            "'hrnb setup' on the local target (the emulator stores each zip it is given)"
        )
    if hashlib.sha256(archive.read_bytes()).hexdigest() != digest:
        raise StackError(f"{archive} does not match its sha256; delete it and deploy again")
    tmp = store / f".{digest}.{os.getpid()}.unpacking"
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(tmp)
    try:
        os.rename(tmp, target)
    except OSError:  # another poller unpacked it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target

