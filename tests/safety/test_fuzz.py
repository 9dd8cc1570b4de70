"""Fuzz: mutated legitimate pickles (flipped bytes, shifted frame boundaries, inserted opcodes, altered dtype
strings) are each loaded in a forked child under an address-space limit and a timeout, next to a
legitimate model already serving in that process. Every mutant is refused or loads harmlessly: the child
neither crashes nor hangs, opens no file but the model, and the other model's predictions stay bit-for-bit.
"""

from __future__ import annotations

import multiprocessing
import pickle
import random
import resource
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bigpickle.safety.unpickler import load_verified
from bigpickle.units import MiB
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from tests.safety.corpus import LEGIT_MODELS

BASES = ("hist-gradient-boosting", "random-forest", "k-neighbors", "column-transformer-onehot", "tfidf-text-pipeline")
MUTANTS_PER_KIND = 3
CHILD_MEMORY = 512 * MiB  # growth allowed over what the parent maps
CHILD_SECONDS = 20.0
FRAME = 0x95
OPCODES = b"()0.12N}]a\x85\x86\x87\x93RbcsuhqrX\x8c\x94\x95"
DTYPE_SWAPS = (b"f4", b"i8", b"u8", b"c8", b"V8", b"O8", b"S8", b"M8")


def _flip(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    i = rng.randrange(2, len(out))
    out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def _insert(data: bytes, rng: random.Random) -> bytes:
    i = rng.randrange(2, len(data))
    return data[:i] + bytes([rng.choice(OPCODES)]) + data[i:]


def _shift_frame(data: bytes, rng: random.Random) -> bytes:
    frames = [i for i in range(2, len(data) - 9) if data[i] == FRAME]
    i = rng.choice(frames) if frames else 2
    length = int.from_bytes(data[i + 1 : i + 9], "little")
    shifted = max(0, length + rng.choice((-9, -3, -1, 1, 3, 9)))
    return data[: i + 1] + shifted.to_bytes(8, "little") + data[i + 9 :]


def _swap_dtype(data: bytes, rng: random.Random) -> bytes:
    spots = [i for i in range(len(data) - 2) if data[i : i + 2] in (b"f8", b"i8")]
    if not spots:
        return _flip(data, rng)
    i = rng.choice(spots)
    return data[:i] + rng.choice(DTYPE_SWAPS) + data[i + 2 :]


MUTATIONS = {"flip": _flip, "insert": _insert, "shift-frame": _shift_frame, "swap-dtype": _swap_dtype}


def _bystander() -> tuple[Any, np.ndarray]:
    X = np.random.default_rng(1).random((64, 4))
    return HistGradientBoostingRegressor(max_iter=10, random_state=0).fit(X, X.sum(axis=1)), X


def _child(conn: Any, path: Path, bystander: Any, X: np.ndarray, inputs: Any, limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    threadpool_limits(1)  # the parent's OpenMP pool does not survive fork: a forked child runs serially
    before = bystander.predict(X)
    opened: list[str] = []

    def watch(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and isinstance(args[0], str | bytes) and Path(str(args[0])) != path:
            opened.append(str(args[0]))

    sys.addaudithook(watch)
    outcome = "refused"
    try:
        model = load_verified(path, "pickle")
        outcome = "loaded"
        try:
            model.predict(inputs)
        except Exception:
            outcome = "loaded, predict refused its input"
    except Exception as exc:
        outcome = f"refused: {type(exc).__name__}"
    after = bystander.predict(X)
    conn.send((outcome, [p for p in opened if not p.startswith(sys.prefix)], bool(np.array_equal(before, after))))


def _address_space() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


def _mutants() -> list[Any]:
    # mutants that crashed numpy while unpickling (a datetime dtype given an integer's state, an object
    # scalar built from raw bytes) are refused by the scanner's dtype checks before they run
    return [(base, kind, n) for base in BASES for kind in MUTATIONS for n in range(MUTANTS_PER_KIND)]


@pytest.fixture(scope="module")
def bases() -> dict[str, tuple[bytes, Any]]:
    built = {}
    for name in BASES:
        model, X = LEGIT_MODELS[name]()
        built[name] = (pickle.dumps(model, protocol=5), X[:3])
    return built


@pytest.fixture(scope="module")
def bystander() -> tuple[Any, np.ndarray]:
    return _bystander()


@pytest.mark.parametrize(("base", "kind", "n"), _mutants())
def test_a_mutated_pickle_is_refused_or_loads_harmlessly(
    base: str, kind: str, n: int, bases: dict[str, tuple[bytes, Any]], bystander: Any, tmp_path: Path
) -> None:
    data, inputs = bases[base]
    mutant = MUTATIONS[kind](data, random.Random(f"{base}/{kind}/{n}"))
    path = tmp_path / "model.pkl"
    path.write_bytes(mutant)
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    limit = _address_space() + CHILD_MEMORY
    child = context.Process(target=_child, args=(send, path, *bystander, inputs, limit), daemon=True)

    child.start()
    send.close()
    answered = receive.poll(CHILD_SECONDS)
    result = receive.recv() if answered else None
    child.join(timeout=5)
    if child.is_alive():
        child.kill()
        child.join()

    assert answered, f"the load hung (> {CHILD_SECONDS:.0f} s) or the child died: exit code {child.exitcode}"
    assert child.exitcode == 0, f"the child crashed: exit code {child.exitcode}"
    _outcome, opened, bystander_unchanged = result
    assert opened == [], f"the load opened files: {opened}"
    assert bystander_unchanged, "another model's predictions changed in the same process"
