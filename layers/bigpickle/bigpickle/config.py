"""Every setting, read once from the environment. No I/O beyond `os.environ`.

The S3 endpoint is not a setting of ours: boto3 honours `AWS_ENDPOINT_URL_S3` itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bigpickle.units import MiB

DEFAULT_MODELS_ROOT = "/mnt/models"


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"setting {name} must be an integer, got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    """Runtime settings; see README "Configuration" for each one."""

    models_root: Path
    model_name: str
    max_body_bytes: int
    part_size_bytes: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            models_root=Path(env.get("MODELS_ROOT", DEFAULT_MODELS_ROOT)),
            model_name=env.get("MODEL_NAME", "").strip(),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", 6 * MiB),
            part_size_bytes=_int(env, "STAGE_PART_SIZE_MIB", 8) * MiB,
        )
