"""Typed errors. Each carries the HTTP status and the stable error code the API answers with.

Staging lets these raise (S3 retries an async invoke only when the handler fails); serving maps them
to JSON in one place (`serving.app`).
"""

from __future__ import annotations


class BigPickleError(Exception):
    """Base class: `status` and `code` are what an HTTP client sees."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequestError(BigPickleError):
    status = 400
    code = "bad_request"


class InvalidModelNameError(BadRequestError):
    code = "invalid_model_name"


class PayloadTooLargeError(BigPickleError):
    status = 413
    code = "payload_too_large"


class ModelNotFoundError(BigPickleError):
    status = 404
    code = "model_not_found"


class ModelNotReadyError(BigPickleError):
    """The model exists in name but cannot answer now (not staged, loading, unloadable)."""

    status = 503
    code = "model_not_ready"

    def __init__(self, message: str, *, retry_after_seconds: int | None = None) -> None:
        headers = {"Retry-After": str(retry_after_seconds)} if retry_after_seconds else None
        super().__init__(message, headers=headers)


class ModelLoadError(ModelNotReadyError):
    code = "model_load_failed"


class PredictionFailedError(BigPickleError):
    """The model itself raised on input that passed validation."""

    status = 500
    code = "prediction_failed"


class StagingError(BigPickleError):
    """Staging did not publish; the current version is untouched."""

    code = "staging_failed"


class IntegrityError(StagingError):
    """Bytes on disk differ from what S3 said (size, checksum, ETag, range)."""

    code = "integrity_error"
