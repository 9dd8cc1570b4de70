"""Helpers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import copy
import pickle
from typing import Any
from urllib.parse import quote_plus

from bigpickle.local.events import load_event

BUCKET = "bigpickle-test-models"


def s3_put_event(bucket: str, key: str) -> dict[str, Any]:
    """events/s3-put.json, re-addressed (keys in S3 events are URL-encoded, as here)."""
    event = copy.deepcopy(load_event("s3-put"))
    record = event["Records"][0]["s3"]
    record["bucket"]["name"] = bucket
    record["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
    record["object"]["key"] = quote_plus(key, safe="/")
    return event


def upload_model(client: Any, model: Any, key: str, bucket: str = BUCKET, protocol: int = 5) -> bytes:
    data = pickle.dumps(model, protocol=protocol)
    client.put_object(Bucket=bucket, Key=key, Body=data)
    return data
