"""Never run an untrusted pickle: an opcode scanner (staging), an allowlist, a restricted unpickler and a
sha256 checked while reading (loading). docs/security.md says what this does and does not protect."""

from bigpickle.safety.allowlist import Allowlist
from bigpickle.safety.scanner import PickleScanner, ScanReport

__all__ = ["Allowlist", "PickleScanner", "ScanReport"]
