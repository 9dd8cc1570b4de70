"""S3's checksums as the copy verifies them: every algorithm S3 reports is computed, and the CRCs that need
the AWS common runtime never silently turn into "not checked"."""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest
from bigpickle.checksums import ChecksumVerifier, full_object_checksum

# The CRC catalogue's check value of each algorithm: the digest of b"123456789".
CHECK_VALUES = {"CRC32": 0xCBF43926, "CRC32C": 0xE3069283, "CRC64NVME": 0xAE8B14860A799888}


@pytest.mark.parametrize("algorithm", sorted(CHECK_VALUES))
def test_each_crc_s3_reports_is_computed_and_compared(algorithm: str) -> None:
    width = 8 if algorithm == "CRC64NVME" else 4
    expected = base64.b64encode(CHECK_VALUES[algorithm].to_bytes(width, "big")).decode()
    verifier = ChecksumVerifier(algorithm, expected)

    verifier.update(memoryview(b"12345"))
    verifier.update(b"6789")

    assert verifier.matches()
    assert full_object_checksum({f"Checksum{algorithm}": expected}) == (algorithm, expected)


def test_given_no_awscrt_then_a_crc32c_check_fails_loudly_instead_of_being_skipped() -> None:
    # given a runtime without awscrt (the predict function's layers), where the module still imports
    without_awscrt = (
        "import sys; sys.modules['awscrt'] = None; import bigpickle.checksums as c; print('imported');"
        " c.ChecksumVerifier('CRC32C', 'AAAAAA==')"
    )

    # when a CRC32C is to be verified
    run = subprocess.run([sys.executable, "-c", without_awscrt], capture_output=True, text=True, timeout=60)

    # then it fails, saying what is missing
    assert run.stdout.strip() == "imported" and run.returncode != 0
    assert "bigpickle needs awscrt to verify S3's CRC32C and CRC64NVME checksums" in run.stderr
