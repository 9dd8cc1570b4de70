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


class TransferError(StagingError):
    """The copy did not finish (network faults outlasted the retries); the parts written so far are kept
    with their journal, so the next run for the same object version resumes."""

    code = "transfer_failed"


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

    def __init__(self, reasons: list[str], *, forbidden: list[str] | None = None) -> None:
        self.reasons = list(reasons)
        self.forbidden = list(forbidden or [])
        shown = "; ".join(self.reasons[:8]) + (f"; and {len(self.reasons) - 8} more" if len(self.reasons) > 8 else "")
        super().__init__(f"refused an unsafe pickle: {shown}")


class ModelIntegrityError(ModelNotReadyError):
    """The model file's sha256 differs from its manifest: corrupted or replaced after staging."""

    code = "model_integrity_failed"
