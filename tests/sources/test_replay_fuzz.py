"""Fuzzing replay with 1,000 seeded byte mutations of the shared recordings (tests/data/fit).

Whatever the bytes, a replay ends normally or with an :class:`~hrnb.errors.HrnbError`; the CLI
prints one error line, never a traceback. Half of the mutated files get their header and file
CRCs recomputed, so the damage reaches the decoder's later stages (definitions, fields, hr
merging, clocks) instead of stopping at the checksum.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from pathlib import Path

import pytest
from fitdecode.utils import compute_crc

from hrnb.errors import HrnbError
from hrnb.sources import ReplaySource

FIT_DATA = Path(__file__).resolve().parent.parent / "data" / "fit"
SEED = 15
MUTATIONS = 1000
#: The 120 KB Fenix 2 run takes ~0.4 s a replay; it gets this many of the mutations.
LARGE_FILE_MUTATIONS = 10
LARGE_FILE_BYTES = 50_000
#: Mutated files also run through ``hrnb recording`` (one interpreter each, ~1 s).
CLI_RUNS = 6


def _fix_crcs(data: bytearray) -> None:
    """Make header size, data size and both CRCs agree with the (mutated) bytes."""
    header_size = data[0]
    if header_size not in (12, 14) or len(data) < header_size + 2:
        return
    data[4:8] = (len(data) - header_size - 2).to_bytes(4, "little")
    if header_size == 14:
        data[12:14] = compute_crc(data, end=12).to_bytes(2, "little")
    data[-2:] = compute_crc(data, end=len(data) - 2).to_bytes(2, "little")


def _mutate(rng: random.Random, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(data))
        kind = rng.randrange(6)
        if kind == 0:
            data[at] ^= 1 << rng.randrange(8)  # flip a bit
        elif kind == 1:
            data[at] = rng.randrange(256)  # replace a byte
        elif kind == 2:
            data[at] = rng.choice((0x00, 0x7F, 0x80, 0xFF))  # a boundary value
        elif kind == 3:
            data.insert(at, rng.randrange(256))
        elif kind == 4:
            del data[at]
        else:
            del data[rng.randrange(at, len(data) + 1):]  # truncate
        if not data:
            break
    if data and rng.random() < 0.5:
        _fix_crcs(data)
    return bytes(data)


def mutated_files() -> list[tuple[str, bytes]]:
    """The seeded mutations, the same on every run."""
    rng = random.Random(SEED)
    originals = {path.name: path.read_bytes() for path in sorted(FIT_DATA.glob("*.fit"))}
    large = [name for name, data in originals.items() if len(data) > LARGE_FILE_BYTES]
    small = [name for name in originals if name not in large]
    names = [rng.choice(large) for _ in range(LARGE_FILE_MUTATIONS if large else 0)]
    names += [rng.choice(small) for _ in range(MUTATIONS - len(names))]
    return [(f"{index:04d}-{name}", _mutate(rng, originals[name]))
            for index, name in enumerate(names)]


async def _replay(path: Path) -> str:
    try:
        async with ReplaySource(path, athlete_id="fuzz", speed=None) as source:
            async for _ in source:
                pass
    except HrnbError as exc:
        return type(exc).__name__
    return "ok"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("fuzz")
    paths = []
    for name, data in mutated_files():
        path = folder / name
        path.write_bytes(data)
        paths.append(path)
    return paths


def test_mutations_are_deterministic() -> None:
    assert mutated_files()[:50] == mutated_files()[:50]


def test_no_mutation_escapes_hrnbs_error_tree(corpus: list[Path]) -> None:
    assert len(corpus) == MUTATIONS

    async def run_all() -> dict[str, int]:
        outcomes: dict[str, int] = {}
        for path in corpus:
            outcome = await _replay(path)  # anything but an HrnbError fails the test here
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        return outcomes

    outcomes = asyncio.run(run_all())
    # The fuzz reaches both ends: files that still replay, and files refused with a reason.
    assert outcomes.get("ok", 0) > 0 and outcomes.get("ReplayError", 0) > 0, outcomes


def test_the_cli_never_prints_a_traceback(corpus: list[Path]) -> None:
    for path in random.Random(SEED).sample(corpus, CLI_RUNS):
        result = subprocess.run(
            [sys.executable, "-m", "hrnb", "recording", str(path)],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert "Traceback" not in result.stderr, (path.name, result.stderr)
        if result.returncode:
            assert result.returncode == 1, (path.name, result.returncode, result.stderr)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("hrnb: error: "), result.stderr
        else:
            assert "heart-rate samples" in result.stdout
