"""S3 ObjectCreated -> stage each model object onto EFS (bigpickle.staging.handle_s3_event).

Failures a retry can fix make the invocation fail on purpose: S3 invokes asynchronously and retries only a
failed invocation. Records that can never be staged (deletes, non-model keys, empty objects) are skipped.
"""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from bigpickle.observability import logger, metrics, tracer
from bigpickle.staging import StageFunction, handle_s3_event

function = StageFunction.from_env()  # settings and clients, built once while the environment initialises


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle_s3_event(event, context, function)
