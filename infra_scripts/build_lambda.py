"""Build the Lambda function zip, reproducibly.

The reference built its package by hand. Here one command builds ``function.zip`` for the
python3.12 runtime: ``lambda/handler.py`` at the root and, under ``hrnb/``, the stdlib-only
package marker, ``errors.py`` and the whole ``wire/`` folder, so the handler and the producer
share one wire format by packaging, never by copying (a new wire module ships without a list to
update). The handler needs nothing beyond the standard library (issue #16 measured each
dependency out: docs/benchmarks/handler.md), so there is no dependency layer, and the zip runs
on either architecture.

Every ``.py`` ships with its python3.12 bytecode (``__pycache__/<name>.cpython-312.pyc``,
unchecked-hash, so nothing is stat'ed or compiled at import): Lambda's code directories are
read-only, so without it every cold start compiles every module it imports. The bytecode is
compiled by a python3.12 interpreter (``hrnb.local.worker.find_runtime_python``) in one fresh
process, in sorted order with a fixed hash seed, so it is the same on every build.

Same input, same bytes: entries are sorted, timestamps and permissions fixed, so the sha256 (and
the CodeSha256 Lambda reports) changes only when the code does. Its size is checked against
Lambda's limits. Usable as ``build(out_dir)`` or ``python infra_scripts/build_lambda.py``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import subprocess
import sys
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hrnb.errors import PackagingError
from hrnb.local.worker import find_runtime_python

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "build" / "lambda"

RUNTIME = "python3.12"
#: What of hrnb ships beside handler.py: the package marker, the error tree and hrnb/wire.
PACKAGED_ROOTS = ("hrnb/__init__.py", "hrnb/errors.py", "hrnb/wire")
#: Lambda quotas: a zip uploaded directly, and the function unzipped.
MAX_ZIPPED_BYTES = 50 * 1024 * 1024
MAX_UNZIPPED_BYTES = 250 * 1024 * 1024

_ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can hold: no build time leaks in


@dataclass(frozen=True)
class Artifact:
    """One built zip with its sizes (bytes) and digest."""

    path: Path
    sha256: str  # hex
    zipped_bytes: int
    unzipped_bytes: int

    @property
    def code_sha256(self) -> str:
        """The digest as Lambda reports it (``CodeSha256``: base64 of the raw sha256)."""
        return base64.b64encode(bytes.fromhex(self.sha256)).decode()


@dataclass(frozen=True)
class BuildResult:
    """The function zip and how Lambda runs it."""

    function: Artifact
    runtime: str = RUNTIME
    handler: str = "handler.lambda_handler"


def build(out_dir: Path = DEFAULT_OUT_DIR, *, source_root: Path = REPO_ROOT) -> BuildResult:
    """Build ``function.zip`` into ``out_dir``, check its size and write ``manifest.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    python = find_runtime_python(RUNTIME)
    if python is None:
        raise PackagingError(f"no {RUNTIME} interpreter found to compile the zip's bytecode "
                             f"(install {RUNTIME}, e.g. with pyenv)", artifact="function.zip")
    function = write_zip(out_dir / "function.zip",
                         with_bytecode(function_entries(source_root), python))
    logger.info("built %s (%d bytes)", function.path, function.zipped_bytes)
    result = BuildResult(function=function)
    check_limits(result)
    (out_dir / "manifest.json").write_text(json.dumps(manifest(result), indent=2) + "\n")
    return result


def function_entries(source_root: Path) -> dict[str, bytes]:
    """Archive name -> content for the function zip."""
    entries = {"handler.py": _read(source_root / "lambda" / "handler.py")}
    for name in packaged_sources(source_root):
        entries[name] = _read(source_root / name)
    return entries


def packaged_sources(source_root: Path) -> list[str]:
    """The hrnb files the function zip carries, as archive names (``hrnb/wire/records.py``)."""
    names: list[str] = []
    for root in PACKAGED_ROOTS:
        path = source_root / root
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        names += [file.relative_to(source_root).as_posix() for file in files]
    return names


#: Run by the runtime's interpreter: JSON {name: source (base64)} in, {name: pyc (base64)} out.
_COMPILE = """
import base64, importlib._bootstrap_external as bx, importlib.util, json, sys
sources = json.load(sys.stdin)
out = {}
for name in sorted(sources):
    source = base64.b64decode(sources[name])
    try:
        code = compile(source, name, "exec", dont_inherit=True, optimize=0)
    except (SyntaxError, ValueError) as exc:
        sys.exit(f"{name}: {exc}")
    pyc = bx._code_to_hash_pyc(code, importlib.util.source_hash(source), checked=False)
    out[name] = base64.b64encode(pyc).decode()
json.dump(out, sys.stdout)
"""


def with_bytecode(entries: Mapping[str, bytes], python: str) -> dict[str, bytes]:
    """``entries`` plus the unchecked-hash bytecode of each ``.py``, compiled by ``python``."""
    sources = {name: base64.b64encode(content).decode()
               for name, content in entries.items() if name.endswith(".py")}
    done = subprocess.run(
        [python, "-s", "-S", "-c", _COMPILE], input=json.dumps(sources), capture_output=True,
        text=True, env={"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0"},
    )
    if done.returncode != 0:
        raise PackagingError(f"{python} could not compile the bytecode: {done.stderr.strip()}",
                             artifact="bytecode")
    compiled = {bytecode_name(name): base64.b64decode(pyc)
                for name, pyc in json.loads(done.stdout).items()}
    return {**entries, **compiled}


def bytecode_name(source: str) -> str:
    """Where Python 3.12 looks for the bytecode of ``source`` (``a/b.py`` ->
    ``a/__pycache__/b.cpython-312.pyc``)."""
    path = PurePosixPath(source)
    return str(path.parent / "__pycache__" / f"{path.stem}.cpython-312.pyc").removeprefix("./")


def write_zip(path: Path, entries: Mapping[str, bytes]) -> Artifact:
    """Write a byte-for-byte reproducible zip: sorted names, fixed times and modes."""
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w") as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIMESTAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, so the mode below is honoured
            mode = 0o755 if name.endswith(".so") else 0o644
            info.external_attr = (0o100000 | mode) << 16
            archive.writestr(info, entries[name], compresslevel=9)
    os.replace(tmp, path)
    data = path.read_bytes()
    return Artifact(
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        zipped_bytes=len(data),
        unzipped_bytes=sum(len(content) for content in entries.values()),
    )


def check_limits(
    result: BuildResult,
    *,
    max_zipped_bytes: int = MAX_ZIPPED_BYTES,
    max_unzipped_bytes: int = MAX_UNZIPPED_BYTES,
) -> None:
    """Raise PackagingError if the zip is too big to upload or to unpack."""
    artifact = result.function
    if artifact.zipped_bytes > max_zipped_bytes:
        raise PackagingError(
            f"{artifact.path.name} is {artifact.zipped_bytes} bytes zipped; Lambda accepts "
            f"at most {max_zipped_bytes} in a direct upload",
            artifact=artifact.path.name,
        )
    if artifact.unzipped_bytes > max_unzipped_bytes:
        raise PackagingError(
            f"{artifact.path.name} unpacks to {artifact.unzipped_bytes} bytes; Lambda allows "
            f"at most {max_unzipped_bytes}",
            artifact=artifact.path.name,
        )


def manifest(result: BuildResult) -> dict[str, object]:
    """What was built, for humans and deploy scripts (``manifest.json`` beside the zips)."""

    def describe(artifact: Artifact) -> dict[str, object]:
        return {
            "file": artifact.path.name,
            "sha256": artifact.sha256,
            "code_sha256": artifact.code_sha256,
            "zipped_bytes": artifact.zipped_bytes,
            "unzipped_bytes": artifact.unzipped_bytes,
        }

    return {
        "runtime": result.runtime,
        "handler": result.handler,
        "function": describe(result.function),
    }


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PackagingError(
            f"{path} is missing from the source tree", artifact=str(path)
        ) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="output directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        artifact = build(args.out).function
    except PackagingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{artifact.path}  {artifact.zipped_bytes:>10} B zipped  "
          f"{artifact.unzipped_bytes:>10} B unzipped  sha256 {artifact.sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
