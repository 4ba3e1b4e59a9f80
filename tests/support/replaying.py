"""Running a ReplaySource to the end in a test: every item, or every item and the error."""

from __future__ import annotations

import asyncio

import pytest

from hrnb.errors import ReplayError
from hrnb.sources import ConnectionEvent, ReplaySource, Sample

Item = Sample | ConnectionEvent


def replay(source: ReplaySource) -> list[Item]:
    async def run() -> list[Item]:
        async with source:
            return [item async for item in source]

    return asyncio.run(run())


def replay_until_error(source: ReplaySource) -> tuple[list[Item], ReplayError]:
    items: list[Item] = []

    async def run() -> None:
        async for item in source:
            items.append(item)

    with pytest.raises(ReplayError) as caught:
        asyncio.run(run())
    return items, caught.value


def samples_of(items: list[Item]) -> list[Sample]:
    return [item for item in items if isinstance(item, Sample)]
