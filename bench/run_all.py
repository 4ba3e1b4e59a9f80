"""`make bench`: run every benchmark in turn, then gather their reports into docs/benchmarks.md.

Each bench/bench_*.py prints its figures as it goes and writes docs/benchmarks/<name>.md (with
the exact command); this script only runs them in one session and builds the index page.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "docs" / "benchmarks"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help="e.g. hrm producer (default: all)")
    args = parser.parse_args()
    scripts = sorted((ROOT / "bench").glob("bench_*.py"))
    if args.names:
        wanted = {f"bench_{name}.py" for name in args.names}
        unknown = wanted - {s.name for s in scripts}
        if unknown:
            parser.error(f"no such benchmark: {', '.join(sorted(unknown))}")
        scripts = [s for s in scripts if s.name in wanted]
    failed = []
    for number, script in enumerate(scripts, 1):
        print(f"[{number}/{len(scripts)}] {script.name}", flush=True)
        started = time.monotonic()
        result = subprocess.run([sys.executable, str(script)], cwd=ROOT)
        print(f"[{number}/{len(scripts)}] {script.name} done in {time.monotonic() - started:.0f} s "
              f"(exit {result.returncode})", flush=True)
        if result.returncode != 0:
            failed.append(script.name)
    write_index()
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


def write_index() -> Path:
    """docs/benchmarks.md: every report under docs/benchmarks/, in one page."""
    parts = [
        "# Benchmarks\n",
        "Measured on the project's 2-core machine with `make bench` (`bench/run_all.py`); "
        "each section names the exact command that produced it. Ratios are measured side by side "
        "in one run.\n",
    ]
    for report in sorted(REPORTS.glob("*.md")):
        text = report.read_text().strip()
        # Demote the report's headings one level so they nest under this page.
        parts.append("\n".join("#" + line if line.startswith("#") else line
                               for line in text.splitlines()) + "\n")
    index = ROOT / "docs" / "benchmarks.md"
    index.write_text("\n".join(parts))
    return index


if __name__ == "__main__":
    raise SystemExit(main())
