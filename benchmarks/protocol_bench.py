"""Memory a `pickle.load` of a file costs, by pickle protocol: the figure behind `loading.capacity`'s prices.

    .venv/bin/python benchmarks/protocol_bench.py --mib 512

Writes one incompressible float64 array of --mib MiB with protocols 2, 4 and 5 into a temp folder and
loads each file in a fresh process, which reports the growth of its resident high-water mark (VmHWM) over
its RSS after imports, per byte of the file. The files are deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

PROTOCOLS = (2, 4, 5)
MiB = 1024 * 1024


def high_water_bytes() -> int:
    """VmHWM: unlike ru_maxrss it starts afresh at exec, so a child does not inherit its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def load_and_report(path: str) -> None:
    import numpy  # noqa: F401  (imported before the baseline, as a predict function has it)

    before = high_water_bytes()
    with open(path, "rb") as f:
        pickle.load(f)
    print(f"{(high_water_bytes() - before) / os.path.getsize(path):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=512, help="size of the array (default 512 MiB)")
    parser.add_argument("--child", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        load_and_report(args.child)
        return

    import numpy as np

    array = np.random.default_rng(0).random(args.mib * MiB // 8)
    print(f"one float64 array of {args.mib} MiB; peak growth of a fresh process's pickle.load / file bytes")
    with tempfile.TemporaryDirectory() as folder:
        for protocol in PROTOCOLS:
            path = Path(folder) / f"protocol{protocol}.pkl"
            with open(path, "wb") as f:
                pickle.dump(array, f, protocol=protocol)
            child = [sys.executable, __file__, "--child", str(path)]
            ratio = subprocess.run(child, capture_output=True, text=True, check=True).stdout.strip()
            print(f"protocol {protocol}: {ratio}x")
            path.unlink()


if __name__ == "__main__":
    main()
