"""Packaging: the function zip and layers are reproducible, complete and within Lambda's limits."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hrnb.errors import PackagingError
from infra_scripts.build_lambda import (
    DEFAULT_WHEEL_CACHE,
    REPO_ROOT,
    BuildResult,
    build,
    bytecode_name,
    check_limits,
    packaged_sources,
)


def names(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as archive:
        return set(archive.namelist())


def test_the_same_input_builds_the_same_bytes(lambda_build: BuildResult, tmp_path: Path) -> None:
    again = build(tmp_path)

    assert again.function.sha256 == lambda_build.function.sha256
    assert {arch: layer.sha256 for arch, layer in again.layers.items()} == {
        arch: layer.sha256 for arch, layer in lambda_build.layers.items()}
    with zipfile.ZipFile(again.function.path) as archive:
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_a_changed_handler_changes_only_the_function_digest(
    lambda_build: BuildResult, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    shutil.copytree(REPO_ROOT / "lambda", source / "lambda")
    for name in packaged_sources(REPO_ROOT):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / name, source / name)
    with (source / "lambda" / "handler.py").open("a") as handler:
        handler.write("\n# a change\n")

    changed = build(tmp_path / "out", architectures=("x86_64",), source_root=source)

    assert changed.function.sha256 != lambda_build.function.sha256
    assert changed.layer("x86_64").sha256 == lambda_build.layer("x86_64").sha256


def test_the_function_zip_holds_the_handler_and_the_shared_schema_byte_for_byte(
    lambda_build: BuildResult,
) -> None:
    shipped = packaged_sources(REPO_ROOT)
    assert "hrnb/wire/records.py" in shipped and "hrnb/errors.py" in shipped
    assert not any(name.startswith(("hrnb/local/", "hrnb/provision/")) for name in shipped)
    sources = {"handler.py", *shipped}
    assert names(lambda_build.function.path) == sources | {bytecode_name(n) for n in sources}
    with zipfile.ZipFile(lambda_build.function.path) as archive:
        assert archive.read("handler.py") == (REPO_ROOT / "lambda" / "handler.py").read_bytes()
        for name in shipped:
            assert archive.read(name) == (REPO_ROOT / name).read_bytes()


@pytest.mark.parametrize(("arch", "machine"), [("x86_64", "x86_64"), ("arm64", "aarch64")])
def test_each_layer_holds_the_dependencies_built_for_its_architecture(
    lambda_build: BuildResult, arch: str, machine: str
) -> None:
    entries = names(lambda_build.layer(arch).path)

    for package in ("aws_lambda_powertools", "jmespath"):
        assert f"python/{package}/__init__.py" in entries
    assert "python/typing_extensions.py" in entries
    assert all(name.startswith("python/") for name in entries)
    native = {name for name in entries if name.endswith(".so")}
    assert all(f"cpython-312-{machine}-linux-gnu.so" in name for name in native)
    # Not packaged: the HTTP clients the handler no longer imports (it signs and posts with the
    # stdlib), the gRPC stack, console scripts.
    assert not any(name.startswith((
        "python/opensearchpy/", "python/requests/", "python/requests_aws4auth/",
        "python/urllib3/", "python/grpc", "python/google/", "python/bin/")) for name in entries)


def test_every_module_ships_with_bytecode_the_runtime_loads_without_compiling(
    lambda_build: BuildResult, tmp_path: Path, runtime_python: str
) -> None:
    roots = []
    for artifact in (lambda_build.function, lambda_build.layer("x86_64")):
        root = tmp_path / artifact.path.stem
        with zipfile.ZipFile(artifact.path) as archive:
            archive.extractall(root)
            sources = {n for n in archive.namelist() if n.endswith(".py")}
            assert {n for n in archive.namelist() if n.endswith(".pyc")} == {
                bytecode_name(n) for n in sources}
            pyc = archive.read(bytecode_name(sorted(sources)[0]))
            assert int.from_bytes(pyc[4:8], "little") == 0b01  # hash-based, unchecked
        roots.append(root)
    task, layer = roots[0], roots[1] / "python"
    probe = (f"import sys; sys.path[:0] = [{str(task)!r}, {str(layer)!r}]; import handler")
    done = subprocess.run([runtime_python, "-I", "-S", "-B", "-v", "-c", probe],
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    loaded = [line for line in done.stderr.splitlines() if "code object from" in line
              and str(tmp_path) in line]
    assert len(loaded) > 30 and all(".pyc'" in line for line in loaded)


def test_sizes_are_checked_against_lambdas_limits(lambda_build: BuildResult) -> None:
    check_limits(lambda_build)  # the real build fits
    assert max(a.zipped_bytes for a in (lambda_build.function, *lambda_build.layers.values())
               ) < 50 * 1024 * 1024
    with pytest.raises(PackagingError, match="direct upload") as too_big:
        check_limits(lambda_build, max_zipped_bytes=lambda_build.function.zipped_bytes - 1)
    assert too_big.value.artifact == "function.zip"
    with pytest.raises(PackagingError, match="unpack to"):
        check_limits(lambda_build, max_unzipped_bytes=1024 * 1024)


def test_a_rebuild_works_offline_from_the_wheel_cache(
    lambda_build: BuildResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there
    monkeypatch.setenv("PIP_RETRIES", "0")

    offline = build(tmp_path / "out", architectures=("arm64",), wheel_cache=DEFAULT_WHEEL_CACHE)

    assert offline.layer("arm64").sha256 == lambda_build.layer("arm64").sha256
    with pytest.raises(PackagingError, match="could not fetch the x86_64 wheels"):
        build(tmp_path / "out2", architectures=("x86_64",), wheel_cache=tmp_path / "empty")


def test_the_command_line_builds_and_reports(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "infra_scripts" / "build_lambda.py"),
         "--out", str(tmp_path), "--arch", "x86_64"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "function.zip" in done.stdout and "layer-x86_64.zip" in done.stdout
    assert (tmp_path / "manifest.json").exists()
    bad = subprocess.run(
        [sys.executable, str(REPO_ROOT / "infra_scripts" / "build_lambda.py"),
         "--out", str(tmp_path), "--arch", "sparc"],
        capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode != 0 and "sparc" in bad.stderr
