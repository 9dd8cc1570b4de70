"""Warm-up: after staging publishes a version, the predict function is invoked asynchronously with a
warm-up event (events/warmup.json) and loads the model then, so the first user request does not pay
for the load (and cannot run into API Gateway's 30 s timeout).

A warm-up is the invocation that can wait: it lends the load its whole remaining time (the function's
timeout, not API Gateway's 30 s). One asynchronous invoke warms one execution environment; provisioned
instances load MODEL_NAME while they initialise (`preload`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bigpickle.errors import BigPickleError
from bigpickle.loading import ModelRegistry
from bigpickle.observability import logger

SOURCE = "bigpickle.warmup"
# AWS_LAMBDA_INITIALIZATION_TYPE of an instance provisioned concurrency starts ahead of traffic; its init
# is not held to the 10 s an on-demand init gets (Lambda's "execution environment lifecycle").
PROVISIONED_CONCURRENCY = "provisioned-concurrency"


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
        except (BotoCoreError, ClientError, BigPickleError) as exc:  # BigPickleError: the API is unreachable
            logger.warning(
                "warm-up invoke failed; the first request will load the model",
                extra={"model": result.model, "error": str(exc)},
            )
            continue
        logger.info("warm-up requested", extra={"model": result.model, "version": result.version})
        requested.append(result.model)
    return requested


def handle_warmup(event: dict[str, Any], registry: ModelRegistry, default_model: str = "") -> dict[str, Any]:
    """Load the event's model (its current version) and wait for it as long as the invocation lasts. A load
    that outlasts it is "loading": the next warm-up or request in this environment carries it on."""
    name = (event.get("detail") or {}).get("model") or default_model
    try:
        loaded = registry.get(name, until_loaded=True)
    except BigPickleError as exc:
        state, version = registry.state(name)
        if state == "loading":
            logger.info("warm-up ran out of time; the load goes on with the next invocation", extra={"model": name})
            return {"status": "loading", "model": name, "version": version}
        logger.warning("warm-up could not load the model", extra={"model": name, "error": exc.message})
        return {"status": "failed", "model": name, "error": {"code": exc.code, "message": exc.message}}
    return {
        "status": "ready",
        "model": name,
        "version": loaded.manifest.version,
        "load_seconds": round(loaded.load_seconds, 3),
    }


def preload(registry: ModelRegistry, model_name: str, initialization_type: str) -> dict[str, Any] | None:
    """During init of a provisioned-concurrency instance, load MODEL_NAME before any traffic arrives (the
    one warm-up staging sends reaches only one instance). On-demand inits skip it: their 10 s would not hold
    a multi-GB load, and a failed init is retried inside the first invocation."""
    if initialization_type != PROVISIONED_CONCURRENCY or not model_name:
        return None
    answer = handle_warmup(warmup_event(model_name), registry, model_name)
    logger.info("provisioned instance preloaded its model", extra=answer)
    return answer
