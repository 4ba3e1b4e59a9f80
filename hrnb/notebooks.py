"""Run the workbench notebooks headless, with parameters, as `make demo` and the tests do.

The notebooks in ``notebooks/`` each start with a cell tagged ``parameters``; papermill injects
the values after it, executes every cell on a real Jupyter kernel and saves the executed copy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hrnb.boundary import file_errors
from hrnb.errors import HrnbError, NotebookError

log = logging.getLogger(__name__)

NOTEBOOKS = {
    "setup": "01_setup.ipynb",
    "live": "02_live_session.ipynb",
    "query": "03_query.ipynb",
}


def notebook_path(name: str, notebooks_dir: Path | None = None) -> Path:
    """The source notebook for ``setup``, ``live`` or ``query``."""
    directory = notebooks_dir or Path(__file__).resolve().parent.parent / "notebooks"
    try:
        return directory / NOTEBOOKS[name]
    except KeyError:
        raise HrnbError(f"no notebook named {name!r}; choose from {', '.join(NOTEBOOKS)}") from None


def run_notebook(
    source: Path,
    output: Path,
    parameters: Mapping[str, Any],
    *,
    timeout_s: float = 600,
    progress: bool = False,
    cwd: Path | None = None,
) -> Path:
    """Execute ``source`` with ``parameters`` into ``output``; raise NotebookError on a failure."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    with file_errors("create the output directory", output.parent):
        output.parent.mkdir(parents=True, exist_ok=True)
    log.info("executing %s -> %s", source, output)
    try:
        papermill.execute_notebook(
            str(source),
            str(output),
            parameters=dict(parameters),
            kernel_name="python3",
            execution_timeout=timeout_s,
            progress_bar=progress,
            cwd=str(cwd or source.parent),
        )
    except PapermillExecutionError as exc:
        raise NotebookError(
            f"{source.name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue} "
            f"(executed copy: {output})",
            notebook=str(output),
        ) from None
    return output
