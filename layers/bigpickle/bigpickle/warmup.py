"""Warm-up: after staging publishes a version, the predict function is invoked asynchronously with a
warm-up event (events/warmup.json) and loads the model then, so the first user request does not pay
for the load (and cannot run into API Gateway's 30 s timeout).

One asynchronous invoke warms one execution environment; provisioned concurrency warms the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bigpickle.errors import BigPickleError
from bigpickle.loading import ModelRegistry
from bigpickle.observability import logger

SOURCE = "bigpickle.warmup"


def warmup_event(model: str, version: str | None = None) -> dict[str, Any]:
    return {"source": SOURCE, "detail": {"model": model, "version": version}}


def is_warmup_event(event: Any) -> bool:
    return isinstance(event, dict) and event.get("source") == SOURCE


def request_warmups(invoke: Callable[[dict[str, Any]], None], results: Iterable[Any]) -> list[str]:
    """Send a warm-up event through `invoke` (an asynchronous Lambda invoke of the predict function, e.g.
    `staging.lambda_invoker(PREDICT_FUNCTION_NAME)`) once per published result.

    Best effort: the version is already published, so a failed invoke is logged, never raised (raising
    would make S3 retry a staging that succeeded). Returns the models a warm-up was requested for.
    """
    requested = []
    for result in results:
        if result.status != "published":
            continue
        try:
            invoke(warmup_event(result.model, result.version))
        except (BotoCoreError, ClientError) as exc:
            logger.warning(
                "warm-up invoke failed; the first request will load the model",
                extra={"model": result.model, "error": str(exc)},
            )
            continue
        logger.info("warm-up requested", extra={"model": result.model, "version": result.version})
        requested.append(result.model)
    return requested


def handle_warmup(event: dict[str, Any], registry: ModelRegistry, default_model: str = "") -> dict[str, Any]:
    """Load the event's model (its current version) and wait for it: an async invoke has the full timeout."""
    name = (event.get("detail") or {}).get("model") or default_model
    try:
        loaded = registry.get(name, until_loaded=True)
    except BigPickleError as exc:
        logger.warning("warm-up could not load the model", extra={"model": name, "error": exc.message})
        return {"status": "failed", "model": name, "error": {"code": exc.code, "message": exc.message}}
    return {
        "status": "ready",
        "model": name,
        "version": loaded.manifest.version,
        "load_seconds": round(loaded.load_seconds, 3),
    }
