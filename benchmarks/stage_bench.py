"""Staging throughput and memory: ours vs boto3 `download_file` vs a single-stream GET, side by side.

    .venv/bin/python benchmarks/stage_bench.py --size-gib 5 --json stage_bench.json

Starts the real local S3 server (SeaweedFS) with its data under --work-dir, uploads one object of
--size-gib (incompressible), then copies it with each strategy in a FRESH subprocess (so each one's
peak RSS is its own) and prints bytes, seconds, MiB/s and peak RSS growth over the process's baseline
(the interpreter with its libraries imported and an S3 client made):

- ours:          bigpickle.staging.stage_object: parallel ranged GETs, sha256 + S3 checksum while copying,
                 journal, fsync, the streaming rewrite into the mapped layout, publish (STAGE_* settings from
                 the environment or the flags below);
- rewrite:       the engine's copy with the sinks staging uses (sha256 and the streaming rewriter), then the
                 rewriter's publish step (stream, index, trailer, fsync): what ours does minus the trial load and
                 the store's publish;
- copy_only:     the same copy without the rewrite (the engine with the sha256 and the scanner as sinks, as
                 staging copied before it rewrote): what rewriting costs is rewrite against this, and what
                 staging as a whole costs is ours against it;
- download_file: boto3's s3transfer with the default TransferConfig (no hashing, no fsync);
- single_stream: one GET of the whole object read into a 1 MiB buffer and dropped (the /dev/null limit).

Everything it creates lives under --work-dir and is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BUCKET = "bigpickle-bench"
KEY = "models/bench/model.pkl"
MiB = 1024 * 1024
STRATEGIES = ("ours", "rewrite", "copy_only", "download_file", "single_stream")


def _text(text: str) -> bytes:
    return b"\x8c" + bytes([len(text)]) + text.encode()


def _frame(ops: bytes) -> bytes:
    return b"\x95" + len(ops).to_bytes(8, "little") + ops


def _array_pickle_parts(payload: int) -> tuple[bytes, bytes]:
    """The opcodes before and after the bytes of a uint8 array of `payload` bytes, as numpy pickles it with
    protocol 5 in band: `_frombuffer(BYTEARRAY8 <bytes>, dtype('u1'), (payload,), 'C')`."""
    head = (
        b"\x80\x05"
        + _frame(_text("numpy._core.numeric") + _text("_frombuffer") + b"\x93(")
        + b"\x96"
        + payload.to_bytes(8, "little")
    )
    shape = payload.to_bytes(8, "little")  # fixed width: the parts' lengths do not depend on the size
    dtype = _text("numpy") + _text("dtype") + b"\x93" + _text("u1") + b"\x89\x88\x87R\x94"
    state = b"(K\x03" + _text("|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    tail = _frame(dtype + state + b"\x8a" + bytes([len(shape)]) + shape + b"\x85" + _text("C") + b"tR.")
    return head, tail


class _IncompressiblePickle:
    """A file-like holding a `size`-byte protocol-5 pickle of one uint8 numpy array whose bytes are
    pseudo-random (a 16 MiB random block, each copy stamped with its index). Staging scans and rewrites
    what it copies, so the object is a model-like pickle: its array moves out of band."""

    def __init__(self, size: int) -> None:
        probe_head, probe_tail = _array_pickle_parts(size)
        self.head, tail = _array_pickle_parts(size - len(probe_head) - len(probe_tail))
        self.tail_start = size - len(tail)
        self.tail = tail
        self.size = size
        self.pos = 0
        self.block = bytearray(os.urandom(16 * MiB))

    def _byte_range(self, start: int, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            at = start + len(out)
            if at < len(self.head):
                out += self.head[at : at + n - len(out)]
            elif at >= self.tail_start:
                out += self.tail[at - self.tail_start : at - self.tail_start + n - len(out)]
            else:
                index, offset = divmod(at - len(self.head), len(self.block))
                self.block[:8] = index.to_bytes(8, "little")
                end = min(len(self.block), offset + n - len(out), self.tail_start - at + offset)
                out += self.block[offset:end]
        return bytes(out)

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.pos if n < 0 else min(n, self.size - self.pos)
        out = self._byte_range(self.pos, n)
        self.pos += n
        return out


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def _reset_peak_rss() -> None:
    """Make VmHWM (peak RSS) start from the current RSS, so imports do not count as the copy's peak."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _copy(client: Any, dest: Path, config: Any, *, rewrite: bool) -> int:
    """The engine's copy of the object into `dest` with sha256 and either the scanner or staging's rewriter
    (then its publish step) as sinks; the bytes copied, or 0 when the scan or the rewrite failed."""
    import hashlib

    from bigpickle.safety import Allowlist, PickleScanner
    from bigpickle.safety.uploads import finish_upload, upload_sink
    from bigpickle.transfer import download, head_object

    allowlist = Allowlist()
    sink = upload_sink("pickle", dest, allowlist) if rewrite else PickleScanner("pickle", allowlist)
    obj = head_object(client, BUCKET, KEY)
    holder = sink if rewrite else None  # as staging does: the array bytes are written once, by the rewriter
    download(client, obj, dest / "model.pkl", config=config, sinks=[hashlib.sha256(), sink], holder=holder)
    if not rewrite:
        return obj.size if sink.verdict().safe else 0
    _, published = finish_upload(sink, dest / "model.pkl", "pickle", allowlist)
    rewritten = published is not None and published.details["layout"]["rewritten"]
    return obj.size if rewritten else 0


def _child(strategy: str, dest: Path) -> dict[str, Any]:
    """Runs in a fresh interpreter: import, make a client, note RSS, copy, report."""
    import boto3
    from bigpickle.config import Settings
    from bigpickle.staging import stage_object, transfer_config
    from bigpickle.store import ModelStore

    settings = Settings.from_env({**os.environ, "MODELS_ROOT": str(dest)})
    client = boto3.client("s3", config=transfer_config(settings).client_config())
    client.head_bucket(Bucket=BUCKET)  # connect before the baseline, as every strategy must
    _reset_peak_rss()
    baseline = _status_bytes("VmRSS")
    cpu_before = os.times()
    started = time.perf_counter()
    if strategy == "ours":
        result = stage_object(client, ModelStore(dest), settings, BUCKET, KEY)
        size = result.bytes
    elif strategy in ("rewrite", "copy_only"):
        size = _copy(client, dest, transfer_config(settings), rewrite=strategy == "rewrite")
    elif strategy == "download_file":
        boto3.client("s3").download_file(BUCKET, KEY, str(dest / "download_file.bin"))
        size = (dest / "download_file.bin").stat().st_size
    else:
        body = client.get_object(Bucket=BUCKET, Key=KEY)["Body"]
        buffer = memoryview(bytearray(MiB))
        size = 0
        while got := body.readinto(buffer):
            size += got
    seconds = time.perf_counter() - started
    cpu_after = os.times()
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    peak = _status_bytes("VmHWM")
    return {"bytes": size, "seconds": seconds, "cpu_seconds": cpu, "baseline_rss": baseline, "peak_rss": peak}


def _run_one(strategy: str, env: dict[str, str], dest_root: Path | None) -> dict[str, Any]:
    dest = Path(tempfile.mkdtemp(prefix="bigpickle-bench-copy-", dir=dest_root))
    os.sync()  # the upload's (or the last copy's) dirty pages must not be flushed on the next one's time
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--child", strategy, "--dest", str(dest)],
            env=env,
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        ).stdout
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    row = json.loads(out.strip().splitlines()[-1])
    row["strategy"] = strategy
    row["mib_per_s"] = row["bytes"] / MiB / row["seconds"]
    row["peak_rss_growth_mib"] = max(0, row["peak_rss"] - row["baseline_rss"]) / MiB
    return row


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput (the lower middle one for an even count)."""
    return sorted(rows, key=lambda r: r["mib_per_s"])[(len(rows) - 1) // 2]


def _ratio(round_: list[dict[str, Any]], strategy: str, other: str) -> float:
    by_name = {r["strategy"]: r["mib_per_s"] for r in round_}
    return by_name[strategy] / by_name[other]


def _table(rows: list[dict[str, Any]]) -> str:
    ours = next(r for r in rows if r["strategy"] == "ours")
    lines = [
        f"{'strategy':<14} {'bytes':>14} {'seconds':>8} {'MiB/s':>8} {'peak RSS +MiB':>14} {'CPU s/GiB':>10} "
        f"{'ours is':>8}",
    ]
    for r in rows:
        ratio = ours["mib_per_s"] / r["mib_per_s"]
        lines.append(
            f"{r['strategy']:<14} {r['bytes']:>14} {r['seconds']:>8.2f} {r['mib_per_s']:>8.1f} "
            f"{r['peak_rss_growth_mib']:>14.1f} {r['cpu_seconds'] / (r['bytes'] / 1024 / MiB):>10.2f} {ratio:>7.2f}x"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gib", type=float, default=5.0, help="object size (the issue asks for >= 5 GB)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--work-dir", type=Path, help="where the S3 server keeps its data (default: a temp dir)")
    parser.add_argument(
        "--dest-dir",
        type=Path,
        help="where the copies go (default: the temp dir, on this machine's disk: like EFS, a file system "
        "behind a page cache with writeback; /dev/shm measures a RAM destination, where the page cache is the "
        "storage and bypassing it saves nothing)",
    )
    parser.add_argument("--part-size-mib", type=int, help="STAGE_PART_SIZE_MIB for ours")
    parser.add_argument("--concurrency", type=int, help="STAGE_CONCURRENCY for ours")
    parser.add_argument("--budget-mib", type=int, help="STAGE_MEMORY_BUDGET_MIB for ours")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated subset, in run order")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="run every strategy this many times, interleaved, and report each one's median run (the machine's "
        "noise moves single runs by +-20%%)",
    )
    parser.add_argument(
        "--sweep",
        help="also run ours with each PARTxCONCURRENCY in this comma-separated list (e.g. 8x4,16x8): how the "
        "defaults were chosen",
    )
    parser.add_argument("--child", choices=STRATEGIES, help=argparse.SUPPRESS)
    parser.add_argument("--dest", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.dest)))
        return 0

    from bigpickle.local.s3server import LocalS3Server

    work = Path(tempfile.mkdtemp(prefix="bigpickle-bench-", dir=args.work_dir))
    try:
        with LocalS3Server(work / "s3") as server:
            client = server.client()
            client.create_bucket(Bucket=BUCKET)
            size = int(args.size_gib * 1024 * MiB)
            started = time.perf_counter()
            client.upload_fileobj(_IncompressiblePickle(size), BUCKET, KEY)
            print(f"uploaded {size} bytes in {time.perf_counter() - started:.1f}s", file=sys.stderr)
            env = {**os.environ, **server.env()}
            for flag, name in (
                ("part_size_mib", "STAGE_PART_SIZE_MIB"),
                ("concurrency", "STAGE_CONCURRENCY"),
                ("budget_mib", "STAGE_MEMORY_BUDGET_MIB"),
            ):
                if getattr(args, flag) is not None:
                    env[name] = str(getattr(args, flag))
            env["POWERTOOLS_LOG_LEVEL"] = "WARNING"
            runs: list[tuple[str, dict[str, str]]] = [(strategy, env) for strategy in args.strategies.split(",")]
            for variant in args.sweep.split(",") if args.sweep else []:
                part, concurrency = variant.split("x")
                runs.append((f"ours {variant}", {**env, "STAGE_PART_SIZE_MIB": part, "STAGE_CONCURRENCY": concurrency}))
            rounds: list[list[dict[str, Any]]] = []
            for round_number in range(1, args.rounds + 1):
                rounds.append([])
                for name, run_env in runs:
                    strategy = "ours" if name.startswith("ours") else name
                    rounds[-1].append({**_run_one(strategy, run_env, args.dest_dir), "strategy": name})
                    print(f"round {round_number}: {name}: {rounds[-1][-1]['mib_per_s']:.0f} MiB/s", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    from bigpickle.config import Settings

    resolved = Settings.from_env(env)
    settings = {
        "part_size_mib": resolved.part_size_bytes // MiB,
        "concurrency": resolved.stage_concurrency,
        "budget_mib": resolved.stage_memory_budget_bytes // MiB,
    }
    print(
        f"object: {size} bytes on the local SeaweedFS S3 server; ours with {settings['part_size_mib']} MiB x "
        f"{settings['concurrency']}, budget {settings['budget_mib']} MiB"
    )
    rows = [_median_row([r for round_ in rounds for r in round_ if r["strategy"] == name]) for name, _ in runs]
    if "ours" in args.strategies.split(","):
        print(f"median of {args.rounds} interleaved rounds per strategy:")
        print(_table(rows))
    pairs = [("ours", other) for other in ("copy_only", "download_file", "single_stream")] + [("rewrite", "copy_only")]
    for strategy, other in pairs:
        per_round = [
            _ratio(round_, strategy, other) for round_ in rounds if {strategy, other} <= {r["strategy"] for r in round_}
        ]
        if per_round:
            print(f"{strategy} / {other} per round: " + ", ".join(f"{ratio:.2f}x" for ratio in per_round))
    if args.json:
        args.json.write_text(
            json.dumps({"object_bytes": size, "settings": settings, "rows": rows, "rounds": rounds}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
