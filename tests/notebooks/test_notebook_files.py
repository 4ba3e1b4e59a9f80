"""The notebooks as files: saved clean, thin, and with the parameters headless runs set."""

from __future__ import annotations

import ast

import nbformat
import papermill
import pytest
from notebook_workbench import source_notebook

from hrnb.notebooks import NOTEBOOKS

#: Parameters `make demo` and the tests pass; renaming one breaks them.
REQUIRED_PARAMETERS = {
    "setup": {"target", "prefix", "index_name", "build_dir", "verify_timeout_s", "teardown"},
    "live": {"target", "prefix", "index_name", "source", "scan_s", "athletes", "duration_s",
             "max_hr", "resting_hr", "threshold_bpm", "catch_up_s", "out_dir"},
    "query": {"target", "prefix", "index_name", "minutes", "athlete_id", "session_id",
              "interval", "max_hr", "resting_hr", "threshold_bpm"},
}


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_saved_without_outputs_or_execution_counts(name: str) -> None:
    notebook = nbformat.read(source_notebook(name), as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, "a notebook without code"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_first_cell_is_the_parameters_cell(name: str) -> None:
    notebook = nbformat.read(source_notebook(name), as_version=4)
    first = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert "parameters" in first.metadata.get("tags", [])
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    # papermill must read every parameter (a comment it cannot parse hides the parameter type)
    found = papermill.inspect_notebook(str(source_notebook(name)))
    assert REQUIRED_PARAMETERS[name] <= set(found), REQUIRED_PARAMETERS[name] - set(found)
    assigned = {target.id for node in ast.parse(first.source).body
                for target in getattr(node, "targets", []) if isinstance(target, ast.Name)}
    assert set(found) == assigned, f"papermill cannot read {assigned - set(found)}"
    assert found["target"]["default"] == '"local"'


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_cells_only_call_into_hrnb(name: str) -> None:
    """Thin notebooks: no function, class or lambda defined in a cell, nothing imported from
    outside the standard library, pandas and hrnb."""
    notebook = nbformat.read(source_notebook(name), as_version=4)
    allowed_roots = {"hrnb", "pandas", "pathlib", "json"}
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        # top-level await is fine in a notebook: parse the cell as the body of a coroutine
        body = "async def _cell():\n" + "".join(f"    {line}\n" for line in
                                               cell.source.splitlines())
        wrapper = ast.parse(body).body[0]
        assert isinstance(wrapper, ast.AsyncFunctionDef)
        for node in (node for statement in wrapper.body for node in ast.walk(statement)):
            assert not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
                                  | ast.Lambda), f"{name}: a definition in a cell:\n{cell.source}"
            if isinstance(node, ast.Import | ast.ImportFrom):
                roots = {alias.name.split(".")[0] for alias in node.names}
                if isinstance(node, ast.ImportFrom):
                    roots = {(node.module or "").split(".")[0]}
                assert roots <= allowed_roots, f"{name} imports {roots - allowed_roots}"
