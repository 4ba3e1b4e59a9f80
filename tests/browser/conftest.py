"""The browser tests share the notebook tests' workbench helper (tests/notebooks)."""

import sys
from pathlib import Path

NOTEBOOK_TESTS = Path(__file__).resolve().parents[1] / "notebooks"
if str(NOTEBOOK_TESTS) not in sys.path:
    sys.path.insert(0, str(NOTEBOOK_TESTS))
