"""S3 ObjectCreated -> stage each model object onto EFS (bigpickle.staging).

Errors propagate on purpose: S3 invokes asynchronously and retries only a failed invocation.
"""

from typing import Any
from urllib.parse import unquote_plus

import boto3
from aws_lambda_powertools.utilities.data_classes import S3Event, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext
from bigpickle.config import Settings
from bigpickle.observability import logger, metrics, tracer
from bigpickle.staging import stage_object
from bigpickle.store import ModelStore

settings = Settings.from_env()
store = ModelStore(settings.models_root)
s3 = boto3.client("s3")


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_source(data_class=S3Event)
def lambda_handler(event: S3Event, context: LambdaContext) -> dict[str, Any]:
    results = [
        stage_object(
            s3,
            store,
            settings,
            record.s3.bucket.name,
            unquote_plus(record.s3.get_object.key),
            record.s3.get_object.version_id,
        )
        for record in event.records
    ]
    return {"results": [r.as_dict() for r in results]}
