"""HTTP API -> bigpickle serving; a warm-up event (events/warmup.json) -> load the model now.

Models load on first use (or warm-up) and stay until a new version is published or memory is needed.
"""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from bigpickle.config import Settings
from bigpickle.loading import ModelRegistry
from bigpickle.observability import logger, metrics, tracer
from bigpickle.serving import create_app
from bigpickle.warmup import handle_warmup, is_warmup_event

settings = Settings.from_env()
registry = ModelRegistry.from_settings(settings)
app = create_app(settings, registry)


@logger.inject_lambda_context
# Responses are users' predictions, up to MBs: never copied into X-Ray metadata (64 KB per segment).
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if is_warmup_event(event):
        return handle_warmup(event, registry, settings.model_name)
    return app.resolve(event, context)
