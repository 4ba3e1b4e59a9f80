"""Shared fixtures: the embedded local stack (reused when running, else started and stopped)
and the Lambda build (made once per test session)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from support import admin_opensearch

from hrnb.clients import aws_client
from hrnb.config import Settings

if TYPE_CHECKING:
    from hrnb.provision import LambdaArtifacts
    from infra_scripts.build_lambda import BuildResult


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    """Settings for the local stack; starts it when nothing answers and stops what it started."""
    import os

    from hrnb.local import launcher

    # A stack the tests start waits 2 s for IAM propagation, not 5 (each set-up waits once).
    os.environ.setdefault("HRNB_STRICT_IAM_PROPAGATION_S", "2")
    current = Settings.from_env(target="local")
    started = launcher.up(current)
    yield current
    if started.started_anything:
        launcher.down(current)


@pytest.fixture
def make_aws_client(settings: Settings) -> Callable[[str], Any]:
    return lambda service, **config: aws_client(settings, service, **config)


@pytest.fixture
def opensearch(settings: Settings) -> Any:
    """A client with every right, for tests that create, fill and inspect indices: the master
    user on the secured local stack (as set-up signs in on AWS)."""
    return admin_opensearch(settings)


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Resource names that cannot collide between tests sharing the stack."""
    return lambda stem: f"{stem}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def lambda_build(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    """The function zip, built once per test session for every test that needs it (the Lambda
    tests, the fault suite, the notebooks)."""
    from infra_scripts.build_lambda import build

    return build(tmp_path_factory.mktemp("lambda-build"))


@pytest.fixture(scope="session")
def lambda_build_dir(lambda_build: BuildResult) -> Path:
    """Where :func:`lambda_build` wrote the zips and their manifest (``--build-dir``)."""
    return lambda_build.function.path.parent


@pytest.fixture(scope="session")
def lambda_artifacts(lambda_build_dir: Path) -> LambdaArtifacts:
    """The build as set-up takes it."""
    from hrnb.provision import LambdaArtifacts

    return LambdaArtifacts.from_build_dir(lambda_build_dir)
