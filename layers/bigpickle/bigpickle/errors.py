"""Typed errors. Each carries the HTTP status and the stable error code the API answers with.

Staging lets these raise (S3 retries an async invoke only when the handler fails); serving maps them
to JSON in one place (`serving.app`).
"""

from __future__ import annotations


class BigPickleError(Exception):
    """Base class: `status` and `code` are what an HTTP client sees."""

    status: int = 500
    code: str = "internal_error"
    # Staging: whether S3 retrying the event can help. A record that fails with retryable=False is skipped
    # (logged, counted) instead of failing the event.
    retryable: bool = True

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequestError(BigPickleError):
    status = 400
    code = "bad_request"


class InvalidModelNameError(BadRequestError):
    code = "invalid_model_name"
    retryable = False


class UnsupportedMediaTypeError(BigPickleError):
    status = 415
    code = "unsupported_media_type"


class PayloadTooLargeError(BigPickleError):
    status = 413
    code = "payload_too_large"


class LimitExceededError(PayloadTooLargeError):
    """A request over MAX_INSTANCES or MAX_ROW_WIDTH; the message names the setting."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


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


class ModelInvalidError(ModelNotReadyError):
    """What the store holds for this model (its `current` pointer or a manifest) is not well-formed; only this
    model is affected. The message says what to do and never shows file system paths."""

    code = "model_invalid"


class PredictionFailedError(BigPickleError):
    """The model itself raised on input that passed validation."""

    status = 500
    code = "prediction_failed"


class StagingError(BigPickleError):
    """Staging did not publish; the current version is untouched."""

    code = "staging_failed"


class LambdaUnreachableError(StagingError):
    """The Lambda API did not answer: the subnets have no route to it."""

    code = "lambda_unreachable"


class IntegrityError(StagingError):
    """Bytes on disk differ from what S3 said (size, checksum, ETag, range)."""

    code = "integrity_error"


class TransferError(StagingError):
    """The copy did not finish (network faults outlasted the retries); the parts written so far are kept
    with their journal, so the next run for the same object version resumes."""

    code = "transfer_failed"


class UnstageableObjectError(StagingError):
    """The object can never be published as it is (empty, deleted, not a model): retrying the event cannot help."""

    code = "unstageable_object"
    retryable = False


class StoreBusyError(StagingError):
    """Another process held the model's lock for longer than the wait allows; a retry finds it free."""

    code = "store_busy"


class StorageFullError(StagingError):
    """The model does not fit where it is being staged (no space left, or larger than the file system allows)."""

    code = "storage_full"


class InsufficientMemoryError(ModelNotReadyError):
    """Loading would need more memory than the function has; the message names both numbers."""

    code = "insufficient_memory"


class ModelVersionMismatchError(ModelNotReadyError):
    """The model was saved under scikit-learn/numpy versions other than the ones this function runs."""

    code = "version_mismatch"


class UnsafePickleError(BigPickleError):
    """The pickle imports globals outside the allowlist or plays stack tricks: never published, never loaded.

    Staging raises it (nothing is published); serving answers 503, as for any model that cannot be loaded.
    """

    status = 503
    code = "unsafe_model"
    retryable = False

    def __init__(self, reasons: list[str], *, forbidden: list[str] | None = None) -> None:
        self.reasons = list(reasons)
        self.forbidden = list(forbidden or [])
        shown = "; ".join(self.reasons[:8]) + (f"; and {len(self.reasons) - 8} more" if len(self.reasons) > 8 else "")
        super().__init__(f"refused an unsafe pickle: {shown}")


class ModelIntegrityError(ModelNotReadyError):
    """The model file's sha256 differs from its manifest: corrupted or replaced after staging."""

    code = "model_integrity_failed"
