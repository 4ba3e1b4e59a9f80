"""Build the Lambda function zip and its dependency layers, reproducibly.

The reference built its layer by hand. Here one command builds, for the python3.12 runtime:

- ``function.zip``: ``lambda/handler.py`` at the root and, under ``hrnb/``, the stdlib-only
  package marker, ``errors.py`` and the whole ``wire/`` folder, so the handler and the producer
  share one wire format by packaging, never by copying (a new wire module ships without a list
  to update);
- ``layer-x86_64.zip`` and ``layer-arm64.zip``: the pinned, hashed closure in
  ``lambda/requirements.txt`` as manylinux wheels for that architecture, unpacked under ``python/``.

Every ``.py`` ships with its python3.12 bytecode (``__pycache__/<name>.cpython-312.pyc``,
unchecked-hash, so nothing is stat'ed or compiled at import): Lambda's code directories are
read-only, so without it every cold start compiles every module it imports. The bytecode is
compiled by a python3.12 interpreter (``hrnb.local.worker.find_runtime_python``) in one fresh
process, in sorted order with a fixed hash seed, so it is the same on every build.

Same input, same bytes: entries are sorted, timestamps and permissions fixed, so the sha256 (and
the CodeSha256 Lambda reports) changes only when the code or a pinned wheel does. Downloaded wheels
are cached under ``~/.cache/hrnb/wheels/<arch>`` so rebuilds work offline. Sizes are checked against
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
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hrnb.errors import PackagingError
from hrnb.local.worker import find_runtime_python

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "build" / "lambda"
DEFAULT_WHEEL_CACHE = Path.home() / ".cache" / "hrnb" / "wheels"

RUNTIME = "python3.12"
PYTHON_VERSION = "3.12"
#: What of hrnb ships beside handler.py: the package marker, the error tree and hrnb/wire.
PACKAGED_ROOTS = ("hrnb/__init__.py", "hrnb/errors.py", "hrnb/wire")
#: Lambda architecture name -> wheel platform machine.
ARCHITECTURES: Mapping[str, str] = {"x86_64": "x86_64", "arm64": "aarch64"}
#: The python3.12 runtime runs on Amazon Linux 2023 (glibc 2.34): these wheel tags load there.
_PLATFORM_TAGS = ("manylinux2014_{machine}", "manylinux_2_28_{machine}", "manylinux_2_34_{machine}")

#: Lambda quotas: a zip uploaded directly, and the function plus all its layers unzipped.
MAX_ZIPPED_BYTES = 50 * 1024 * 1024
MAX_UNZIPPED_BYTES = 250 * 1024 * 1024

_ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can hold: no build time leaks in
_SKIPPED_WHEEL_DATA = ("scripts", "headers", "data")  # console scripts etc. are useless in Lambda


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
    """The function zip and one dependency layer per architecture."""

    function: Artifact
    layers: Mapping[str, Artifact]  # architecture ("x86_64", "arm64") -> layer zip
    runtime: str = RUNTIME
    handler: str = "handler.lambda_handler"

    def layer(self, architecture: str) -> Artifact:
        try:
            return self.layers[architecture]
        except KeyError:
            raise PackagingError(
                f"no layer was built for {architecture!r}; built: {', '.join(self.layers)}"
            ) from None


def build(
    out_dir: Path = DEFAULT_OUT_DIR,
    *,
    architectures: Sequence[str] = tuple(ARCHITECTURES),
    wheel_cache: Path = DEFAULT_WHEEL_CACHE,
    source_root: Path = REPO_ROOT,
) -> BuildResult:
    """Build ``function.zip`` and ``layer-<arch>.zip`` into ``out_dir`` and check their sizes."""
    for arch in architectures:
        if arch not in ARCHITECTURES:
            raise PackagingError(
                f"unknown Lambda architecture {arch!r}; use one of {', '.join(ARCHITECTURES)}"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    python = find_runtime_python(RUNTIME)
    if python is None:
        raise PackagingError(f"no {RUNTIME} interpreter found to compile the zips' bytecode "
                             f"(install {RUNTIME}, e.g. with pyenv)", artifact="function.zip")
    function = write_zip(out_dir / "function.zip",
                         with_bytecode(function_entries(source_root), python))
    logger.info("built %s (%d bytes)", function.path, function.zipped_bytes)
    requirements = source_root / "lambda" / "requirements.txt"
    layers = {}
    for arch in architectures:
        with tempfile.TemporaryDirectory(prefix=f"hrnb-wheels-{arch}-") as target:
            wheels = fetch_wheels(requirements, arch, wheel_cache / arch, Path(target))
            layers[arch] = write_zip(out_dir / f"layer-{arch}.zip",
                                     with_bytecode(layer_entries(wheels), python))
        logger.info("built %s (%d bytes)", layers[arch].path, layers[arch].zipped_bytes)
    result = BuildResult(function=function, layers=layers)
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


def fetch_wheels(requirements: Path, arch: str, cache: Path, target: Path) -> list[Path]:
    """The pinned wheels for ``arch``, copied into the empty directory ``target``: from the cache
    if it holds them all, else downloaded (and added to the cache).

    Only the wheels of this requirements file land in ``target``, so stale wheels in the cache
    never reach a layer.
    """
    machine = ARCHITECTURES[arch]
    cache.mkdir(parents=True, exist_ok=True)
    base = [
        sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
        "--no-deps", "--require-hashes", "--only-binary=:all:",
        "--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", "cp312",
        *[arg for tag in _PLATFORM_TAGS for arg in ("--platform", tag.format(machine=machine))],
        "-r", str(requirements), "-d", str(target),
    ]
    offline = subprocess.run(
        [*base, "--no-index", "--find-links", str(cache)], capture_output=True, text=True
    )
    if offline.returncode != 0:
        logger.info("downloading %s wheels (cache at %s is incomplete)", arch, cache)
        online = subprocess.run(base, capture_output=True, text=True)
        if online.returncode != 0:
            raise PackagingError(
                f"pip could not fetch the {arch} wheels pinned in {requirements} "
                f"(offline, the cache {cache} must hold them all):\n{online.stderr.strip()}",
                artifact=f"layer-{arch}.zip",
            )
    wheels = sorted(target.glob("*.whl"))
    for wheel in wheels:
        cached = cache / wheel.name
        if not cached.exists():
            cached.write_bytes(wheel.read_bytes())
    return wheels


def layer_entries(wheels: Iterable[Path]) -> dict[str, bytes]:
    """Archive name -> content for a layer: each wheel unpacked under ``python/``."""
    entries: dict[str, bytes] = {}
    owners: dict[str, str] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for info in archive.infolist():
                if info.is_dir():
                    continue
                name = _installed_name(info.filename)
                if name is None:
                    continue
                if name in entries:
                    raise PackagingError(
                        f"{wheel.name} and {owners[name]} both provide {name}",
                        artifact=wheel.name,
                    )
                entries[name] = archive.read(info)
                owners[name] = wheel.name
    return entries


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


def _installed_name(member: str) -> str | None:
    """Where a wheel member lands in ``python/``, or None when Lambda has no use for it."""
    parts = PurePosixPath(member).parts
    if "__pycache__" in parts or member.endswith(".pyc"):
        return None
    if parts[0].endswith(".data"):
        if len(parts) < 3 or parts[1] in _SKIPPED_WHEEL_DATA:
            return None
        parts = parts[2:]  # purelib / platlib go to the top of the path entry
    return "python/" + "/".join(parts)


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
    """Raise PackagingError if a zip is too big to upload or a deployment too big to unpack."""
    for artifact in (result.function, *result.layers.values()):
        if artifact.zipped_bytes > max_zipped_bytes:
            raise PackagingError(
                f"{artifact.path.name} is {artifact.zipped_bytes} bytes zipped; Lambda accepts "
                f"at most {max_zipped_bytes} in a direct upload (trim requirements.txt)",
                artifact=artifact.path.name,
            )
    for arch, layer in result.layers.items():
        total = result.function.unzipped_bytes + layer.unzipped_bytes
        if total > max_unzipped_bytes:
            raise PackagingError(
                f"function plus {arch} layer unpack to {total} bytes; Lambda allows at most "
                f"{max_unzipped_bytes}",
                artifact=layer.path.name,
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
        "layers": {arch: describe(layer) for arch, layer in sorted(result.layers.items())},
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
    parser.add_argument(
        "--arch", action="append", choices=sorted(ARCHITECTURES), dest="architectures",
        help="architecture of a layer to build (repeatable; default: all)",
    )
    parser.add_argument("--wheel-cache", type=Path, default=DEFAULT_WHEEL_CACHE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        result = build(
            args.out,
            architectures=tuple(args.architectures or ARCHITECTURES),
            wheel_cache=args.wheel_cache,
        )
    except PackagingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for artifact in (result.function, *result.layers.values()):
        print(
            f"{artifact.path}  {artifact.zipped_bytes:>10} B zipped  "
            f"{artifact.unzipped_bytes:>10} B unzipped  sha256 {artifact.sha256}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
