"""Redrive on the local stack: the function runs from its deployed zips in a worker, as the
local poller runs it (the emulator cannot run code)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hrnb.config import Settings
from hrnb.local.poller import load_deployment
from hrnb.local.worker import LambdaWorker
from hrnb.provision.base import AwsClients


def local_invoke(settings: Settings,
                 aws: AwsClients) -> tuple[Callable[[Mapping[str, Any]], Any], Callable[[], None]]:
    """An ``Invoke`` for :func:`hrnb.redrive.redrive` that runs the deployed function (its
    worker starts at the first batch), and what stops the worker."""
    workers: list[LambdaWorker] = []

    def invoke(event: Mapping[str, Any]) -> Any:
        if not workers:
            config = aws.lambda_.get_function_configuration(FunctionName=settings.function_name)
            deployment = load_deployment(settings, aws.lambda_, aws.sts, config)
            workers.append(LambdaWorker(
                deployment.spec, log_path=settings.state_dir / "lambda-logs" / "redrive.log"))
        result = workers[0].invoke(event)
        return result.payload if result.ok else None

    def close() -> None:
        for worker in workers:
            worker.close()

    return invoke, close
