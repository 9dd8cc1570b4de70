"""Shared fixtures: real sklearn models, a temp folder as EFS, moto S3, the real local S3 server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from bigpickle.config import Settings
from bigpickle.local.context import LocalLambdaContext
from bigpickle.local.s3server import LocalS3Server
from bigpickle.local.samples import diabetes_regressor, iris_forest, iris_pipeline
from bigpickle.store import ModelStore
from moto import mock_aws

from tests.helpers import BUCKET

SAMPLE_MODELS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "iris": iris_forest,
    "iris-pipeline": iris_pipeline,
    "diabetes": diabetes_regressor,
}


@pytest.fixture(scope="session")
def trained() -> dict[str, tuple[Any, Any]]:
    """name -> (fitted model, its training X): a RandomForestClassifier, a Pipeline and a regressor."""
    return {name: make() for name, make in SAMPLE_MODELS.items()}


@pytest.fixture
def models_root(tmp_path: Path) -> Path:
    root = tmp_path / "efs"
    root.mkdir()
    return root


@pytest.fixture
def store(models_root: Path) -> ModelStore:
    return ModelStore(models_root)


@pytest.fixture
def settings(models_root: Path) -> Settings:
    return Settings.from_env({"MODELS_ROOT": str(models_root), "MODEL_NAME": "iris"})


@pytest.fixture
def lambda_env(monkeypatch: pytest.MonkeyPatch, models_root: Path) -> Path:
    """The environment the handlers read at import (cold start)."""
    monkeypatch.setenv("MODELS_ROOT", str(models_root))
    monkeypatch.setenv("MODEL_NAME", "iris")
    return models_root


@pytest.fixture
def context() -> LocalLambdaContext:
    return LocalLambdaContext()


@pytest.fixture
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture(scope="session")
def s3_server() -> Iterator[LocalS3Server]:
    """One real S3 server (SeaweedFS) for the whole test session."""
    with LocalS3Server() as server:
        server.client().create_bucket(Bucket=BUCKET)
        yield server


@pytest.fixture
def real_s3(s3_server: LocalS3Server, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A boto3 client for the real local S3 server; the environment points handlers at it too."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server.client()
