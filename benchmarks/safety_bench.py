"""What the pickle checks cost: plain `pickle.load` vs bigpickle's verified load (allowlisted find_class,
opcode scanner reading ahead, sha256 while reading), and the staging scanner's throughput.

    .venv/bin/python benchmarks/safety_bench.py [--array-mib 1024] [--vocabulary 200000]

Each load runs in a fresh process so its peak memory (ru_maxrss) is its own. Two models: an array-heavy
one (one big float64 array: bytes dominate) and an opcode-heavy one (a TfidfVectorizer with a large
vocabulary: many small objects, the scanner's worst case per byte).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bigpickle.safety import PickleScanner
from bigpickle.units import MiB

LOAD = """
import json, pickle, resource, sys, time
from pathlib import Path
import psutil
import numpy, sklearn.feature_extraction.text  # imported before measuring: both loads pay it equally
from bigpickle.safety.unpickler import load_verified
path, how, sha = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
before = psutil.Process().memory_info().rss  # current, not the import-time peak
started = time.perf_counter()
if how == "plain":
    with open(path, "rb") as f:
        model = pickle.load(f)
else:
    model = load_verified(path, "pickle", sha256=sha)
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "growth": peak - before}))
"""


def load_in_child(path: Path, how: str, sha: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", LOAD, str(path), how, sha], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def scan_rate(path: Path) -> tuple[float, int]:
    scanner = PickleScanner()
    started = time.perf_counter()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MiB):
            scanner.update(chunk)
    report = scanner.verdict()
    return time.perf_counter() - started, report.opcodes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--array-mib", type=int, default=1024)
    parser.add_argument("--vocabulary", type=int, default=200_000)
    args = parser.parse_args()
    from sklearn.feature_extraction.text import TfidfVectorizer

    with tempfile.TemporaryDirectory() as tmp:
        models = {
            f"array {args.array_mib} MiB": {"weights": np.random.default_rng(0).random(args.array_mib * MiB // 8)},
            f"tfidf vocabulary {args.vocabulary}": TfidfVectorizer().fit(
                [" ".join(f"w{i + j}" for j in range(50)) for i in range(0, args.vocabulary, 50)]
            ),
        }
        print(f"{'model':28} {'bytes':>12} {'plain s':>8} {'verified s':>10} {'time x':>7} "
              f"{'plain peak/bytes':>16} {'verified peak/bytes':>19} {'scan MB/s':>9} {'opcodes':>9}")  # fmt: skip
        for name, model in models.items():
            path = Path(tmp) / "model.pkl"
            with open(path, "wb") as f:
                pickle.dump(model, f, protocol=5)
            del model
            size = path.stat().st_size
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(8 * MiB):
                    digest.update(chunk)
            plain = load_in_child(path, "plain", digest.hexdigest())
            verified = load_in_child(path, "verified", digest.hexdigest())
            scan_seconds, opcodes = scan_rate(path)
            print(
                f"{name:28} {size:>12} {plain['seconds']:>8.2f} {verified['seconds']:>10.2f} "
                f"{verified['seconds'] / plain['seconds']:>7.2f} {plain['growth'] / size:>16.2f} "
                f"{verified['growth'] / size:>19.2f} {size / 1e6 / scan_seconds:>9.0f} {opcodes:>9}"
            )
            path.unlink()


if __name__ == "__main__":
    main()
