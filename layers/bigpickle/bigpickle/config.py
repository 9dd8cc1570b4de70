"""Every setting, read once from the environment. No I/O beyond `os.environ`.

The S3 endpoint is not a setting of ours: boto3 honours `AWS_ENDPOINT_URL_S3` itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from bigpickle.safety.allowlist import parse_extra
from bigpickle.units import MiB

DEFAULT_MODELS_ROOT = "/mnt/models"
T = TypeVar("T")


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"setting {name} must be an integer, got {raw!r}") from None


def _choice(environ: Mapping[str, str], name: str, choices: Mapping[str, T], default: str) -> T:
    raw = environ.get(name, "").strip().lower() or default
    if raw not in choices:
        raise ValueError(f"setting {name} must be one of {', '.join(choices)}, got {raw!r}")
    return choices[raw]


@dataclass(frozen=True)
class Settings:
    """Runtime settings; see README "Configuration" for each one. Built by `from_env`, which holds every default."""

    models_root: Path
    model_name: str
    max_body_bytes: int
    part_size_bytes: int
    # Staging engine (docs/staging.md explains how the defaults were measured).
    stage_concurrency: int
    stage_memory_budget_bytes: int
    stage_checkpoint_seconds: int
    stage_max_continuations: int
    stage_direct_io: bool
    keep_versions: int
    # Loading and serving (docs/loading.md).
    model_mmap: bool
    model_verify: str  # "stream": hash a published layout's stream and index at load; "full": every byte
    model_refresh_seconds: int
    model_version_check: str
    function_memory_bytes: int | None  # AWS_LAMBDA_FUNCTION_MEMORY_SIZE, set by Lambda itself
    predict_function_name: str  # warm-up target, set on the stage function
    # Security (docs/security.md).
    pickle_allowlist_extra: frozenset[tuple[str, str]]
    max_instances: int
    max_row_width: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            models_root=Path(env.get("MODELS_ROOT", DEFAULT_MODELS_ROOT)),
            model_name=env.get("MODEL_NAME", "").strip(),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", 6 * MiB),
            part_size_bytes=_int(env, "STAGE_PART_SIZE_MIB", 32) * MiB,
            stage_concurrency=_int(env, "STAGE_CONCURRENCY", 4),
            stage_memory_budget_bytes=_int(env, "STAGE_MEMORY_BUDGET_MIB", 128) * MiB,
            stage_checkpoint_seconds=_int(env, "STAGE_CHECKPOINT_SECONDS", 60),
            stage_max_continuations=_int(env, "STAGE_MAX_CONTINUATIONS", 8),
            stage_direct_io=_choice(env, "STAGE_DIRECT_IO", {"on": True, "off": False}, "on"),
            keep_versions=_int(env, "KEEP_VERSIONS", 3),
            model_mmap=_choice(env, "MODEL_MMAP", {"on": True, "off": False}, "on"),
            model_verify=_choice(env, "MODEL_VERIFY", {"stream": "stream", "full": "full"}, "stream"),
            model_refresh_seconds=_int(env, "MODEL_REFRESH_SECONDS", 30),
            model_version_check=_choice(env, "MODEL_VERSION_CHECK", {"strict": "strict", "warn": "warn"}, "strict"),
            function_memory_bytes=_int(env, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", 0) * MiB or None,
            predict_function_name=env.get("PREDICT_FUNCTION_NAME", "").strip(),
            pickle_allowlist_extra=parse_extra(env.get("PICKLE_ALLOWLIST_EXTRA", "")),
            max_instances=_int(env, "MAX_INSTANCES", 10_000),
            max_row_width=_int(env, "MAX_ROW_WIDTH", 10_000),
        )
