"""Packaging: the function zip is reproducible, complete, standard library only and within
Lambda's limits."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hrnb.errors import PackagingError
from infra_scripts.build_lambda import (
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
    with zipfile.ZipFile(again.function.path) as archive:
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_a_changed_handler_changes_the_digest(
    lambda_build: BuildResult, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    shutil.copytree(REPO_ROOT / "lambda", source / "lambda")
    for name in packaged_sources(REPO_ROOT):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / name, source / name)
    with (source / "lambda" / "handler.py").open("a") as handler:
        handler.write("\n# a change\n")

    changed = build(tmp_path / "out", source_root=source)

    assert changed.function.sha256 != lambda_build.function.sha256


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


def test_every_module_ships_with_bytecode_the_runtime_loads_without_compiling(
    lambda_build: BuildResult, tmp_path: Path, runtime_python: str
) -> None:
    task = tmp_path / "task"
    with zipfile.ZipFile(lambda_build.function.path) as archive:
        archive.extractall(task)
        sources = {n for n in archive.namelist() if n.endswith(".py")}
        assert {n for n in archive.namelist() if n.endswith(".pyc")} == {
            bytecode_name(n) for n in sources}
        pyc = archive.read(bytecode_name(sorted(sources)[0]))
        assert int.from_bytes(pyc[4:8], "little") == 0b01  # hash-based, unchecked
    # The function zip alone, no layer and no site-packages: the handler is stdlib only.
    probe = f"import sys; sys.path[:0] = [{str(task)!r}]; import handler"
    done = subprocess.run([runtime_python, "-I", "-S", "-B", "-v", "-c", probe],
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    loaded = [line for line in done.stderr.splitlines() if "code object from" in line
              and str(tmp_path) in line]
    assert all(".pyc'" in line for line in loaded)
    assert {bytecode_name(name) for name in ("handler.py", "hrnb/wire/records.py",
                                             "hrnb/wire/jsonlog.py", "hrnb/wire/http1.py")} <= {
        line.split(str(task) + "/", 1)[1].rstrip("'") for line in loaded}


def test_sizes_are_checked_against_lambdas_limits(lambda_build: BuildResult) -> None:
    check_limits(lambda_build)  # the real build fits
    assert lambda_build.function.zipped_bytes < 50 * 1024 * 1024
    with pytest.raises(PackagingError, match="direct upload") as too_big:
        check_limits(lambda_build, max_zipped_bytes=lambda_build.function.zipped_bytes - 1)
    assert too_big.value.artifact == "function.zip"
    with pytest.raises(PackagingError, match="unpacks to"):
        check_limits(lambda_build, max_unzipped_bytes=lambda_build.function.unzipped_bytes - 1)


def test_the_command_line_builds_and_reports(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "infra_scripts" / "build_lambda.py"),
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "function.zip" in done.stdout and "layer" not in done.stdout
    assert sorted(path.name for path in tmp_path.iterdir()) == ["function.zip", "manifest.json"]
    bad = subprocess.run(
        [sys.executable, str(REPO_ROOT / "infra_scripts" / "build_lambda.py"),
         "--out", str(tmp_path), "--arch", "sparc"],
        capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode != 0 and "--arch" in bad.stderr
