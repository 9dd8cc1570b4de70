"""Every setting, declared once in `SETTINGS` and read once from the environment. No I/O beyond `os.environ`.

`SETTINGS` is the one source: `Settings.from_env` builds from it and docs/settings.md is rendered from it
(`python -m bigpickle.config > docs/settings.md`; a unit test fails when the two differ). The S3 endpoint is
not a setting of ours: boto3 honours `AWS_ENDPOINT_URL_S3` itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bigpickle.units import MiB


def _integer(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"setting {name} must be an integer, got {raw!r}") from None


def _mib(name: str, raw: str) -> int:
    return _integer(name, raw) * MiB


def _lambda_memory(name: str, raw: str) -> int | None:
    return _mib(name, raw) or None if raw else None


def parse_extra(raw: str) -> frozenset[tuple[str, str]]:
    """`PICKLE_ALLOWLIST_EXTRA`: comma-separated `module:name` (or `module.name`, split at the last dot)."""
    pairs = set()
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        module, sep, name = item.partition(":") if ":" in item else item.rpartition(".")
        if not sep or not module or not name:
            raise ValueError(f"PICKLE_ALLOWLIST_EXTRA entry {item!r} is not module:name")
        pairs.add((module, name))
    return frozenset(pairs)


@dataclass(frozen=True)
class Kind:
    """How a setting's text becomes its value; `name` is its type in docs/settings.md."""

    name: str
    parse: Callable[[str, str], Any]  # (environment name, stripped text, never empty but for an empty default)


def _choice(choices: Mapping[str, Any]) -> Kind:
    def parse(name: str, raw: str) -> Any:
        if raw.lower() not in choices:
            raise ValueError(f"setting {name} must be one of {', '.join(choices)}, got {raw.lower()!r}")
        return choices[raw.lower()]

    return Kind(" / ".join(f"`{choice}`" for choice in choices), parse)


TEXT = Kind("text", lambda name, raw: raw)
PATH = Kind("path", lambda name, raw: Path(raw))
INTEGER = Kind("integer", _integer)
MEBIBYTES = Kind("integer (MiB)", _mib)
LAMBDA_MEMORY = Kind("integer (MiB)", _lambda_memory)
ON_OFF = _choice({"on": True, "off": False})
PAIRS = Kind("`module:name`, comma-separated", lambda name, raw: parse_extra(raw))


@dataclass(frozen=True)
class Setting:
    env: str  # the environment variable
    field: str  # the `Settings` attribute it fills
    kind: Kind
    default: str  # as it would be written in the environment; "" = unset
    meaning: str


SETTINGS: tuple[Setting, ...] = (
    Setting("MODELS_ROOT", "models_root", PATH, "/mnt/models",
            "where models live: the EFS mount path in Lambda, any folder locally"),
    Setting("MODEL_NAME", "model_name", TEXT, "",
            "the default model, served by `POST /predict` and checked by `GET /health`"),
    Setting("MODEL_MMAP", "model_mmap", ON_OFF, "on",
            "`on`: map `.bpk` array buffers (and joblib arrays) read-only from the file; `off`: read them into memory"),
    Setting("MODEL_VERIFY", "model_verify", _choice({"stream": "stream", "full": "full"}), "stream",
            "what a load hashes: a published `.bpk`'s stream and index (`stream`), or every byte before serving"
            " (`full`)"),
    Setting("MODEL_REFRESH_SECONDS", "model_refresh_seconds", INTEGER, "30",
            "how often (s) a warm container re-reads a model's `current` pointer"),
    Setting("MODEL_VERSION_CHECK", "model_version_check", _choice({"strict": "strict", "warn": "warn"}), "strict",
            "`warn`: load a model saved under other scikit-learn/numpy versions, with a logged warning, instead"
            " of 503"),
    Setting("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "function_memory_bytes", LAMBDA_MEMORY, "",
            "set by Lambda itself: the capacity guard's limit; no limit when unset"),
    Setting("PREDICT_FUNCTION_NAME", "predict_function_name", TEXT, "",
            "on the stage function: the predict function to warm up after a publish"),
    Setting("MAX_BODY_BYTES", "max_body_bytes", INTEGER, str(6 * MiB),
            "larger request bodies get 413 (the default is Lambda's synchronous payload limit, 6 MiB)"),
    Setting("MAX_INSTANCES", "max_instances", INTEGER, "10000",
            "more instances in one request get 413 `too_many_instances`"),
    Setting("MAX_ROW_WIDTH", "max_row_width", INTEGER, "10000",
            "a row with more values gets 413 `row_too_wide`"),
    Setting("PICKLE_ALLOWLIST_EXTRA", "pickle_allowlist_extra", PAIRS, "",
            "globals admitted beyond the built-in allowlist; each is callable by whoever can upload a model"
            " (docs/security.md)"),
    Setting("STAGE_PART_SIZE_MIB", "part_size_bytes", MEBIBYTES, "32",
            "bytes per ranged GET and per journal entry when staging (docs/staging.md)"),
    Setting("STAGE_CONCURRENCY", "stage_concurrency", INTEGER, "4",
            "parallel ranged GETs at most (lowered to fit the memory budget)"),
    Setting("STAGE_MEMORY_BUDGET_MIB", "stage_memory_budget_bytes", MEBIBYTES, "128",
            "RSS a staging run may add over the interpreter with the library imported"),
    Setting("STAGE_CHECKPOINT_SECONDS", "stage_checkpoint_seconds", INTEGER, "60",
            "with less than this left of the invocation, checkpoint and continue in a new one"),
    Setting("STAGE_MAX_CONTINUATIONS", "stage_max_continuations", INTEGER, "8",
            "self-invocations per event before staging fails (its parts are kept for a retry)"),
    Setting("STAGE_DIRECT_IO", "stage_direct_io", ON_OFF, "on",
            "`on`: write the model around the page cache (O_DIRECT) where the file system allows it; `off`: cached"),
    Setting("KEEP_VERSIONS", "keep_versions", INTEGER, "3",
            "published versions kept per model; older ones are removed, never the current one"),
)  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """Runtime settings, one attribute per entry of `SETTINGS` (docs/settings.md), which holds every default."""

    models_root: Path
    model_name: str
    max_body_bytes: int
    part_size_bytes: int
    stage_concurrency: int
    stage_memory_budget_bytes: int
    stage_checkpoint_seconds: int
    stage_max_continuations: int
    stage_direct_io: bool
    keep_versions: int
    model_mmap: bool
    model_verify: str
    model_refresh_seconds: int
    model_version_check: str
    function_memory_bytes: int | None
    predict_function_name: str
    pickle_allowlist_extra: frozenset[tuple[str, str]]
    max_instances: int
    max_row_width: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(**{s.field: s.kind.parse(s.env, env.get(s.env, "").strip() or s.default) for s in SETTINGS})


def settings_table() -> str:
    """docs/settings.md: every setting as a markdown table, rendered from `SETTINGS`."""
    lines = [
        "<!-- Generated from bigpickle/config.py SETTINGS by `make docs` (python -m bigpickle.config): do not edit -->",
        "# Settings",
        "",
        "Every setting bigpickle reads is an environment variable, declared once in `bigpickle/config.py`. An unset",
        "or empty variable takes the default below. template.yaml sets on the functions only what it overrides on",
        "purpose (its parameters say which); boto3's `AWS_ENDPOINT_URL_S3` and Powertools' `POWERTOOLS_*` are",
        "those libraries' own settings.",
        "",
        "| variable | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default else "(unset)"
        lines.append(f"| `{s.env}` | {s.kind.name} | {default} | {s.meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(settings_table(), end="")
