"""The Lambda zip is closed: the handler imports only the standard library and the zip's own hrnb
modules; those import only the standard library and each other. There is no dependency layer.

``lambda/handler.py`` is not in a package, so import-linter (``make lint``) cannot see it; this
reads the imports of every file the build packs with ``ast`` instead.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path, PurePosixPath

import pytest

from infra_scripts.build_lambda import REPO_ROOT, packaged_sources

HANDLER = "lambda/handler.py"


def zip_modules(sources: list[str]) -> frozenset[str]:
    """Dotted names of the hrnb modules the zip carries (``hrnb/wire/__init__.py`` -> hrnb.wire)."""
    return frozenset(re.sub(r"(\.__init__)?\.py$", "", name).replace("/", ".")
                     for name in sources)


class _Imports(ast.NodeVisitor):
    """(line, dotted name) of each import that runs; ``if TYPE_CHECKING:`` blocks do not."""

    def __init__(self, package: str) -> None:
        self.package = package
        self.found: list[tuple[int, str]] = []

    def visit_If(self, node: ast.If) -> None:
        if getattr(node.test, "id", None) != "TYPE_CHECKING":
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found += [(node.lineno, alias.name) for alias in node.names]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        parts = self.package.split(".")[: len(self.package.split(".")) - node.level + 1]
        base = ".".join([*(parts if node.level else []), *([node.module] if node.module else [])])
        # `from hrnb import config` names the module hrnb.config; an attribute resolves below.
        self.found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]


def _is_hrnb_module(name: str) -> bool:
    path = REPO_ROOT / name.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def foreign_imports(path: Path, package: str, carried: frozenset[str]) -> list[str]:
    """The imports of ``path`` that neither the standard library nor the zip satisfy, as
    ``line: name``."""
    visitor = _Imports(package)
    visitor.visit(ast.parse(path.read_text()))
    problems = []
    for line, name in visitor.found:
        top, parent = name.split(".")[0], name.rpartition(".")[0]
        if (top in sys.stdlib_module_names or name in carried
                or (parent in carried and not _is_hrnb_module(name))):
            continue
        problems.append(f"{line}: {name}")
    return problems


@pytest.mark.parametrize("name", [HANDLER, *packaged_sources(REPO_ROOT)])
def test_each_file_in_the_function_zip_imports_only_the_stdlib_and_what_the_zip_carries(
    name: str,
) -> None:
    package = "" if name == HANDLER else str(PurePosixPath(name).parent).replace("/", ".")
    carried = zip_modules(packaged_sources(REPO_ROOT))
    assert foreign_imports(REPO_ROOT / name, package, carried) == []


def test_the_check_names_an_import_the_zip_does_not_carry(tmp_path: Path) -> None:
    bad = tmp_path / "handler.py"
    bad.write_text("import json\nfrom hrnb.wire.records import decode_record\n"
                   "from hrnb import config\nimport boto3\n"
                   "from aws_lambda_powertools import Logger\n"
                   "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pandas\n")
    carried = zip_modules(packaged_sources(REPO_ROOT))
    assert foreign_imports(bad, "", carried) == [
        "3: hrnb.config", "4: boto3", "5: aws_lambda_powertools.Logger"]
