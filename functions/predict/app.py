"""HTTP API -> bigpickle serving; a warm-up event (events/warmup.json) -> load the model now.

Models load on first use (or warm-up, or during init of a provisioned instance) and stay until a new
version is published or memory is needed. Every wait for a load is bounded by the invocation's remaining
time: Lambda freezes the environment between invocations, so a load moves on only while one runs.
"""

import os
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from bigpickle.config import Settings
from bigpickle.loading import ModelRegistry
from bigpickle.observability import logger, metrics
from bigpickle.serving import create_app
from bigpickle.warmup import handle_warmup, is_warmup_event, preload

settings = Settings.from_env()
registry = ModelRegistry.from_settings(settings)
app = create_app(settings, registry)
preload(registry, settings.model_name, os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE", ""))


# No X-Ray subsegment per request: Active tracing already times every invocation, and the SDK's own
# subsegment cost 0.26-0.41 ms of the 1 ms per-request budget (docs/loading.md). Model loads, where a
# cold start spends its time, are traced (bigpickle.loading.registry).
@logger.inject_lambda_context
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    with registry.invocation(lambda: context.get_remaining_time_in_millis() / 1000):
        if is_warmup_event(event):
            return handle_warmup(event, registry, settings.model_name)
        return app.resolve(event, context)
