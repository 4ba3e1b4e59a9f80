"""The public surface: ``hrnb.__all__`` resolves, and ``import hrnb`` stays cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest

import hrnb

HEAVY = ("boto3", "botocore", "bleak", "plotly", "pandas", "opensearchpy")


@pytest.mark.parametrize("name", hrnb.__all__)
def test_every_exported_name_resolves(name: str) -> None:
    assert getattr(hrnb, name) is not None


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        hrnb.nothing_here  # noqa: B018


def test_importing_hrnb_imports_no_heavy_dependency() -> None:
    code = ("import sys, hrnb, hrnb.errors, hrnb.wire.records, hrnb.wire.index_schema, "
            "hrnb.wire.kinesis; print(','.join(sorted(m for m in "
            f"{HEAVY!r} if m in sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == ""


def test_a_lazy_name_loads_its_module_only_when_used() -> None:
    code = ("import sys, hrnb; before = 'pandas' in sys.modules; hrnb.query; "
            "print(before, 'pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "True"]
