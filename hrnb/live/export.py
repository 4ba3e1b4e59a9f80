"""HTML and PNG export of a figure; PNG through Debian's chromium, never a downloaded browser."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go

from hrnb.boundary import file_errors
from hrnb.errors import ExportError

#: Debian's chromium; PNG export uses it and nothing else.
DEBIAN_CHROMIUM = Path("/usr/bin/chromium")


# --- export ------------------------------------------------------------------------------------
def export_html(figure: go.Figure, path: str | Path) -> Path:
    """A self-contained HTML file (plotly.js embedded: it opens offline)."""
    target = Path(path)
    with file_errors("write", target, error=ExportError):
        go.Figure(figure).write_html(target, include_plotlyjs=True, full_html=True)
    return target


def export_png(figure: go.Figure, path: str | Path, *, chromium: str | Path = DEBIAN_CHROMIUM,
               width: int = 1200, height: int = 600) -> Path:
    """A PNG rendered by kaleido in Debian's chromium (``path`` in kaleido's options, so it
    never looks for or downloads another browser; MathJax off: no network)."""
    import kaleido

    target = Path(path)
    if not Path(chromium).is_file():
        raise ExportError(
            f"PNG export needs Debian's chromium at {chromium}, which is missing: "
            "run 'apt-get install chromium' (as root)", path=str(target))
    try:
        image = kaleido.calc_fig_sync(
            go.Figure(figure), opts={"format": "png", "width": width, "height": height},
            kopts={"path": str(chromium), "mathjax": False})
    except Exception as exc:  # kaleido and choreographer raise many kinds; name them once
        raise ExportError(f"kaleido could not render {target.name} with {chromium}: {exc}",
                          path=str(target)) from exc
    with file_errors("write", target, error=ExportError):
        target.write_bytes(image)
    return target

