"""The API as tools see it: schemathesis (every check, every phase, seeded, a bounded number of examples)
against `bigpickle serve` on 127.0.0.1 with the demo's model staged. The run passes only when every
failure it finds is one of the accepted ones in api_fuzz_baseline.json, each explained in docs/api-fuzz.md.

`make api-fuzz` runs this test alone. To see what a new failure is, run the printed command by hand; to
accept one, document it in docs/api-fuzz.md first, then add it with `--baseline-update`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import publish_model

BIN = Path(sys.executable).parent
BASELINE = Path(__file__).with_name("api_fuzz_baseline.json")
MODEL = "iris"  # the demo's model; the OpenAPI document's example model name
SEED = "18"
MAX_EXAMPLES = "10"  # per operation and phase
# The document carries the server's limits, and the coverage phase sends bodies at each boundary: with the
# defaults (10,000 rows of 10,000 values) those are megabytes each and the run takes minutes.
LIMITS = {"MAX_INSTANCES": "64", "MAX_ROW_WIDTH": "64"}


@pytest.fixture
def served_url(tmp_path: Path, trained: dict[str, Any]) -> Iterator[str]:
    """`bigpickle serve` in its own process, on a free port, with the iris forest published."""
    root = tmp_path / "efs"
    publish_model(root, MODEL, trained[MODEL][0])
    log = tmp_path / "serve.log"
    command = [str(BIN / "bigpickle"), "serve", "--models-root", str(root), "--model-name", MODEL, "--port", "0"]
    with open(log, "w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **LIMITS})
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"http://127\.0\.0\.1:\d+", log.read_text())):
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield found[0]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_schemathesis_finds_no_failure_beyond_the_documented_ones(served_url: str, tmp_path: Path) -> None:
    baseline = tmp_path / BASELINE.name  # a copy: the run must not rewrite the accepted list
    shutil.copy(BASELINE, baseline)
    command = [
        str(BIN / "schemathesis"),
        "run",
        f"{served_url}/openapi.json",
        "--checks=all",
        f"--max-examples={MAX_EXAMPLES}",
        f"--seed={SEED}",
        "--workers=1",
        "--request-timeout=30",
        "--output-truncate=true",
        "--generation-database=none",  # no examples carried over from an earlier run
        f"--baseline={baseline}",
    ]

    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=170)

    assert run.returncode == 0, f"{' '.join(command)}\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}"
    assert "Tested: 5" in run.stdout  # every operation but GET /openapi.json, which schemathesis reads
    assert "3 covered / 3 selected" in run.stdout  # the links from GET /v1/models to the model routes
