"""S3 ObjectCreated -> stage each model object onto EFS (bigpickle.staging).

Failures a retry can fix make the invocation fail on purpose: S3 invokes asynchronously and retries only a
failed invocation. Records that can never be staged (deletes, non-model keys, empty objects) are skipped.
"""

from typing import Any
from urllib.parse import unquote_plus

import boto3
from aws_lambda_powertools.utilities.data_classes import S3Event, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext
from bigpickle.config import Settings
from bigpickle.observability import logger, metrics, tracer
from bigpickle.staging import S3Record, lambda_invoker, raise_for_retry, stage_event, transfer_config
from bigpickle.store import ModelStore
from bigpickle.warmup import request_warmups

settings = Settings.from_env()
store = ModelStore(settings.models_root)
s3 = boto3.client("s3", config=transfer_config(settings).client_config())
# After a publish, the predict function is invoked asynchronously to load the model (events/warmup.json).
warmup_invoke = lambda_invoker(settings.predict_function_name) if settings.predict_function_name else None


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_source(data_class=S3Event)
def lambda_handler(event: S3Event, context: LambdaContext) -> dict[str, Any]:
    records = [
        S3Record(
            bucket=record.s3.bucket.name,
            key=unquote_plus(record.s3.get_object.key),
            version_id=record.s3.get_object.version_id,
            sequencer=record.s3.get_object.get("sequencer"),
            event_name=record.event_name,
        )
        for record in event.records
    ]
    invoke = lambda_invoker(context.invoked_function_arn)  # continuations near the time limit
    results = stage_event(
        event.raw_event, context, client=s3, store=store, settings=settings, invoke=invoke, records=records
    )
    if warmup_invoke is not None:
        request_warmups(warmup_invoke, results)  # for what was published, even when another record failed
    raise_for_retry(results)
    return {"results": [r.as_dict() for r in results]}
