"""HTTP API -> bigpickle serving. The model loads on first use and stays for the container's life."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from bigpickle.observability import logger, metrics, tracer
from bigpickle.serving import create_app

app = create_app()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
