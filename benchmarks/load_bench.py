"""Load the same multi-GB model by each strategy, side by side, and measure the predict handler's overhead.

    .venv/bin/python benchmarks/load_bench.py --gib 2

Each load strategy runs in a fresh subprocess (so one strategy's heap never flatters another's). The
child records its resident memory after imports, loads, and reports the kernel's high-water mark
(ru_maxrss); the parent samples the child's anonymous memory (RssAnon) every 10 ms for the chart. The model is a
KNeighborsRegressor (brute force) holding one big float64 training matrix: the shape of model where
mapping pays (tree ensembles copy their nodes on unpickle, so for them mmap saves nothing).

Then the predict handler (functions/predict/app.py, with its Powertools decorators, X-Ray as in Lambda)
answers real API Gateway events for a 100-tree random forest, interleaved with bare `model.predict` on
the same rows.

Writes benchmarks/results/load_memory.png and benchmarks/results/load_bench.json. The files go to a
temp folder (--workdir) and are deleted at the end; they are read from the page cache, so load times
here measure CPU and memory, not EFS throughput.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import pickle
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.helpers: publish a model the way staging does

RESULTS = REPO / "benchmarks" / "results"
VERSION = "20261126T120000Z-bench"
FEATURES = 64
NAMES = {".pkl": "big-pkl", ".bpk": "big-bpk", ".joblib": "big-joblib"}
REWRITTEN = "big-rewritten"  # the .pkl as staging publishes it now: streamed through the rewriter


def model_file(efs: Path, suffix: str) -> Path:
    return efs / NAMES[suffix] / "versions" / VERSION / f"model{suffix}"


# file -> model: the call that turns a path into a model, timed alone (ours: the registry's loader, crash
# marker and checks included, without the registry's bookkeeping around it)
LOADER_SECONDS: list[float] = []


def registry_load(efs: Path, name: str, mmap: bool) -> Any:
    from bigpickle.loading import ModelRegistry
    from bigpickle.store import ModelStore

    loaded = ModelRegistry(ModelStore(efs), mmap=mmap).get(name, until_loaded=True)
    LOADER_SECONDS.append(loaded.load_seconds)
    return loaded.model


def file_to_model(load: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    model = load()
    LOADER_SECONDS.append(time.perf_counter() - started)
    return model


def joblib_load(path: Path, **kwargs: Any) -> Any:
    import joblib

    return file_to_model(lambda: joblib.load(path, **kwargs))


def naive_loads(path: Path) -> Any:
    def load() -> Any:
        with open(path, "rb") as f:
            return pickle.loads(f.read())

    return file_to_model(load)


def file_load(path: Path) -> Any:
    def load() -> Any:
        with open(path, "rb") as f:
            return pickle.load(f)

    return file_to_model(load)


STRATEGIES: dict[str, Callable[[Path], Any]] = {
    "pickle.loads(f.read())": lambda efs: naive_loads(model_file(efs, ".pkl")),
    "pickle.load(file)": lambda efs: file_load(model_file(efs, ".pkl")),
    "joblib.load": lambda efs: joblib_load(model_file(efs, ".joblib")),
    "joblib.load mmap_mode=r": lambda efs: joblib_load(model_file(efs, ".joblib"), mmap_mode="r"),
    "ours .pkl (as uploaded)": lambda efs: registry_load(efs, NAMES[".pkl"], mmap=False),
    "ours .bpk v1 (before)": lambda efs: registry_load(efs, NAMES[".bpk"], mmap=False),
    "ours .bpk v1 mapped (before)": lambda efs: registry_load(efs, NAMES[".bpk"], mmap=True),
    "ours rewritten, MODEL_MMAP=off": lambda efs: registry_load(efs, REWRITTEN, mmap=False),
    "ours rewritten, mapped": lambda efs: registry_load(efs, REWRITTEN, mmap=True),
}


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- children --


def child_load(strategy: str, efs: Path) -> None:
    import bigpickle.loading  # noqa: F401 - every child pays the same imports before its baseline
    import numpy as np
    import sklearn.neighbors  # noqa: F401 - the model's classes: loads are timed with imports excluded

    base, anon_base = rss(), anonymous_rss(os.getpid())
    started = time.monotonic()
    print("BENCH", json.dumps({"event": "start", "t": started}), flush=True)
    model = STRATEGIES[strategy](efs)
    seconds = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    after, anon_after = rss(), anonymous_rss(os.getpid())
    query = np.random.default_rng(1).normal(size=(1, FEATURES))
    t = time.perf_counter()
    model.predict(query)
    predict_seconds = time.perf_counter() - t
    done = {"event": "done", "base": base, "anon_base": anon_base, "peak": peak, "after": after, "seconds": seconds}
    done["anon_after"] = anon_after
    done["loader_seconds"] = LOADER_SECONDS[0]
    print("BENCH", json.dumps({**done, "predict": predict_seconds}), flush=True)


@contextlib.contextmanager
def stdout_to_devnull() -> Iterator[None]:
    """The handler logs a JSON line per request (as in Lambda); keep it out of the report, not out of the timing."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(devnull)
        os.close(saved)


def timed(predict: Callable[[Any], Any], record: list[float]) -> Callable[[Any], Any]:
    def run(inputs: Any) -> Any:
        t = time.perf_counter()
        try:
            return predict(inputs)
        finally:
            record.append(time.perf_counter() - t)

    return run


# What Lambda sets for a traced invocation. Outside Lambda, Powertools turns its tracer into no-ops, which
# would hide what tracing costs a request: with these the X-Ray SDK records a sampled request (the worst
# case) and sends its segments to a daemon address on this machine, as in Lambda.
LAMBDA_TRACING_ENV = {
    "LAMBDA_TASK_ROOT": str(REPO / "functions" / "predict"),
    "_X_AMZN_TRACE_ID": "Root=1-67a0c0de-0123456789abcdef01234567;Parent=0123456789abcdef;Sampled=1",
    "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
}


def child_overhead(efs: Path, repeats: int) -> None:
    os.environ.update(LAMBDA_TRACING_ENV)  # before Powertools is imported: its Tracer decides at import
    import copy

    import numpy as np
    from bigpickle.local.context import LocalLambdaContext
    from bigpickle.local.events import load_event
    from bigpickle.local.runtime import predict_handler
    from sklearn.ensemble import RandomForestClassifier

    from tests.helpers import publish_model

    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 20))
    y = (X[:, 0] + X[:, 1] * X[:, 2] + rng.normal(scale=0.5, size=len(X)) > 0).astype(int)
    model = RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=-1).fit(X, y).set_params(n_jobs=None)
    publish_model(efs, "forest", model)
    os.environ.update({"MODELS_ROOT": str(efs), "MODEL_NAME": "forest"})
    handler, context = predict_handler(), LocalLambdaContext()

    inner: list[float] = []  # model.predict as timed inside each handler call

    figures = {}
    for rows in (1, 1000):
        inputs = X[:rows]
        event = copy.deepcopy(load_event("predict-single"))
        event["body"], event["isBase64Encoded"] = json.dumps({"instances": inputs.tolist()}), False
        event["rawPath"] = event["requestContext"]["http"]["path"] = "/v1/models/forest:predict"
        with stdout_to_devnull():
            answer = handler(event, context)  # first call loads the model
            assert json.loads(answer["body"]).get("predictions") == model.predict(inputs).tolist(), answer["body"]
            served = inspect.unwrap(handler).__globals__["registry"].get("forest").model
            served.predict = timed(served.predict, inner)  # an instance attribute: the handler calls it
            bare, full = [], []
            inner.clear()
            for _ in range(repeats):
                t = time.perf_counter()
                model.predict(inputs)
                bare.append(time.perf_counter() - t)
                t = time.perf_counter()
                handler(event, context)
                full.append(time.perf_counter() - t)
            del served.predict
        # Other work on a shared machine slows both calls of a pair alike, so the overhead is the median
        # of paired differences: handler minus the bare predict just before it ("side by side"), and
        # handler minus the predict inside that same call ("own": parsing, validation, JSON, logs, metrics).
        b, h = statistics.median(bare) * 1000, statistics.median(full) * 1000
        side = statistics.median(f - b for f, b in zip(full, bare, strict=True)) * 1000
        own = statistics.median(f - i for f, i in zip(full, inner, strict=True)) * 1000
        figures[rows] = {
            "bare_ms": b,
            "handler_ms": h,
            "overhead_ms": side,
            "overhead_pct": side / b * 100,
            "own_overhead_ms": own,
            "own_overhead_pct": own / b * 100,
        }
    print("BENCH", json.dumps({"event": "done", "figures": figures}), flush=True)


# -- parent --


def build(efs: Path, gib: float) -> int:
    """Fit the model once and stage it three ways; returns its .pkl size (the model's bytes)."""
    code = f"""
import numpy as np, sys
sys.path.insert(0, {str(REPO)!r})
from sklearn.neighbors import KNeighborsRegressor
from tests.helpers import publish_model, publish_rewritten
rows = int({gib} * 2**30 / 8 / {FEATURES})
X = np.random.default_rng(0).normal(size=(rows, {FEATURES}))
model = KNeighborsRegressor(n_neighbors=5, algorithm="brute").fit(X, X[:, 0].copy())
for suffix, name in {NAMES!r}.items():
    publish_model({str(efs)!r}, name, model, {VERSION!r}, suffix=suffix)
publish_rewritten({str(efs)!r}, {REWRITTEN!r}, model, {VERSION!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    return model_file(efs, ".pkl").stat().st_size


def anonymous_rss(pid: int) -> int:
    """Anonymous resident memory (RssAnon): what counts toward an OOM; mapped file pages do not."""
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("RssAnon:"))
    return int(line.split()[1]) * 1024


def run_child(args: list[str], sample: bool) -> tuple[dict[str, Any], list[tuple[float, int]], float]:
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    lines: list[dict[str, Any]] = []
    reader = threading.Thread(  # the child's own logs pass through; its reports start with "BENCH "
        target=lambda: lines.extend(json.loads(ln[6:]) for ln in proc.stdout if ln.startswith("BENCH ")), daemon=True
    )
    reader.start()
    samples = []
    while proc.poll() is None:
        with contextlib.suppress(OSError, StopIteration):
            samples.append((time.monotonic(), anonymous_rss(proc.pid)))
        time.sleep(0.01 if sample else 0.1)
    reader.join()
    if proc.returncode:
        raise SystemExit(f"child {args} failed with exit code {proc.returncode}")
    start = next((e["t"] for e in lines if e["event"] == "start"), 0.0)
    return next(e for e in lines if e["event"] == "done"), samples, start


MAPPED_PAIR = ("ours rewritten, mapped", "joblib.load mmap_mode=r")


def mapped_side_by_side(efs: Path, rounds: int) -> dict[str, Any]:
    """The mapped loads, ours against joblib's, each in a fresh process, in `rounds` interleaved pairs: one
    sub-millisecond sample each is noise on this machine, the median of many is not."""
    seconds: dict[str, list[float]] = {name: [] for name in MAPPED_PAIR}
    for _ in range(rounds):
        for name in MAPPED_PAIR:
            done, _, _ = run_child(["--child", name, str(efs)], sample=False)
            seconds[name].append(done["loader_seconds"])
    ours, theirs = (statistics.median(seconds[name]) for name in MAPPED_PAIR)
    per_pair = statistics.median(a / b for a, b in zip(*seconds.values(), strict=True))
    print(
        f"\nmapped, file -> model, fresh process each, median of {rounds} interleaved pairs: "
        f"ours {ours * 1000:.3f} ms, joblib.load(mmap_mode='r') {theirs * 1000:.3f} ms: {ours / theirs:.2f}x "
        f"(median of the pairs' ratios {per_pair:.2f}x); target: at most 1.2x and 0.25 s"
    )
    return {"rounds": rounds, "seconds": seconds, "ratio_of_medians": ours / theirs, "median_pair_ratio": per_pair}


def warm_page_cache(efs: Path) -> None:
    """Read every model file once, so no strategy pays (or is spared) a cold disk read."""
    for path in efs.rglob("model.*"):
        with open(path, "rb", buffering=0) as f:
            while f.read(64 * 2**20):
                pass


def chart(series: dict[str, list[tuple[float, float]]], model_gib: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5))
    for label, points in series.items():
        ax.plot([t for t, _ in points], [m for _, m in points], label=label, linewidth=1.8)
    ax.axhline(model_gib, color="grey", linestyle="--", linewidth=1)
    ax.text(0, model_gib, " model bytes", va="bottom", color="grey")
    ax.set_xlabel("seconds since the load started (each line ends when its load returns)")
    ax.set_ylabel("anonymous memory growth, RssAnon (GiB)")
    ax.set_title(f"Loading a {model_gib:.2f} GiB scikit-learn model: memory over time, by strategy")
    ax.legend(loc="upper right", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


COLD_MODELS = ("sparse-linear", "neighbours")


def build_cold(efs: Path, gib: float) -> None:
    """A sparse linear model over a large vocabulary (a prediction touches the few coefficients its rows
    use) and brute-force neighbours (a prediction reads the whole training matrix), each as an uploaded
    .pkl and as staging publishes it."""
    code = f"""
import sys
import numpy as np
import scipy.sparse as sp
sys.path.insert(0, {str(REPO)!r})
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsRegressor
from tests.helpers import publish_model, publish_rewritten
n = int({gib} * 2**30 / 8)
linear = LogisticRegression().fit(np.eye(4), [0, 1, 0, 1])
# as if trained on a corpus with a vocabulary of n words (fitting that here would take many GiB)
linear.coef_, linear.n_features_in_ = np.random.default_rng(0).normal(size=(1, n)), n
X = np.random.default_rng(1).normal(size=(n // {FEATURES}, {FEATURES}))
for name, model in (("sparse-linear", linear), ("neighbours", KNeighborsRegressor(algorithm="brute").fit(X, X[:, 0]))):
    publish_model({str(efs)!r}, name + "-pkl", model, {VERSION!r})
    publish_rewritten({str(efs)!r}, name + "-rewritten", model, {VERSION!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def child_cold(name: str, efs: Path, gib: float) -> None:
    import numpy as np
    import scipy.sparse as sp
    from bigpickle.loading import ModelRegistry
    from bigpickle.store import ModelStore

    n = int(gib * 2**30 / 8)
    if name.startswith("sparse-linear"):
        query: Any = sp.random(1, n, density=20 / n, format="csr", random_state=2)
    else:
        query = np.random.default_rng(2).normal(size=(1, FEATURES))
    started = time.perf_counter()
    if name.endswith("-pkl"):
        model = file_load(efs / name / "versions" / VERSION / "model.pkl")
    else:
        model = ModelRegistry(ModelStore(efs), mmap=True).get(name, until_loaded=True).model
    loaded = time.perf_counter()
    model.predict(query)
    done = time.perf_counter()
    print("BENCH", json.dumps({"event": "done", "load": loaded - started, "predict": done - loaded}), flush=True)


def cold_first_predictions(efs: Path, gib: float) -> dict[str, Any]:
    print(f"\nfirst prediction from a cold page cache (echo 3 > /proc/sys/vm/drop_caches), {gib} GiB arrays:")
    build_cold(efs, gib)
    figures = {}
    for model in COLD_MODELS:
        for form in ("pkl", "rewritten"):
            name = f"{model}-{form}"
            os.sync()
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
            done, _, _ = run_child(["--child", "cold", name, str(efs), str(gib)], sample=False)
            figures[name] = {"load_s": done["load"], "first_predict_s": done["predict"]}
            how = "pickle.load(file)" if form == "pkl" else "rewritten, mapped"
            print(
                f"  {model:<14} {how:<18} load {done['load']:7.2f} s, first predict {done['predict']:7.3f} s, "
                f"total {done['load'] + done['predict']:7.2f} s",
                flush=True,
            )
    shutil.rmtree(efs)
    return figures


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        if sys.argv[2] == "cold":
            child_cold(sys.argv[3], Path(sys.argv[4]), float(sys.argv[5]))
        elif sys.argv[2] == "overhead":
            child_overhead(Path(sys.argv[3]), int(sys.argv[4]))
        else:
            child_load(sys.argv[2], Path(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=2.0, help="size of the model's array (default 2 GiB)")
    parser.add_argument("--workdir", default=tempfile.gettempdir(), help="where the model files go (deleted after)")
    parser.add_argument("--repeats", type=int, default=300, help="predict calls per overhead figure")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="also time load + first prediction after `echo 3 > /proc/sys/vm/drop_caches` (root; drops the "
        "whole machine's page cache) for a sparse linear model and brute-force neighbours",
    )
    parser.add_argument("--cold-gib", type=float, default=1.0, help="array size of the --cold models")
    parser.add_argument(
        "--load-repeats", type=int, default=15, help="interleaved pairs of fresh processes for the mapped loads"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="load-bench-", dir=args.workdir))
    try:
        efs = work / "efs"
        print(f"building a {args.gib} GiB KNeighborsRegressor and staging it as .pkl, .bpk, .joblib in {work} ...")
        model_bytes = build(efs, args.gib)
        warm_page_cache(efs)
        gib = model_bytes / 2**30
        print(f"model: {model_bytes:,} bytes ({gib:.2f} GiB) as a protocol-5 pickle\n")
        print(
            f"{'strategy':<31} {'peak growth / model bytes':>26} {'load s':>8} {'file->model s':>14} "
            f"{'held after / model':>19} {'anon / model':>13} {'first predict s':>16}"
        )
        report: dict[str, Any] = {"model_bytes": model_bytes, "strategies": {}}
        series = {}
        for strategy in STRATEGIES:
            done, samples, start = run_child(["--child", strategy, str(efs)], sample=True)
            peak_ratio = (done["peak"] - done["base"]) / model_bytes
            held_ratio = (done["after"] - done["base"]) / model_bytes
            anon_ratio = (done["anon_after"] - done["anon_base"]) / model_bytes
            report["strategies"][strategy] = {
                **done,
                "peak_ratio": peak_ratio,
                "held_ratio": held_ratio,
                "anon_ratio": anon_ratio,
            }
            print(
                f"{strategy:<31} {peak_ratio:>25.2f}x {done['seconds']:>8.2f} {done['loader_seconds']:>14.3f} "
                f"{held_ratio:>18.2f}x "
                f"{anon_ratio:>12.3f}x {done['predict']:>16.2f}",
                flush=True,
            )
            end = start + done["seconds"]  # the load only: a first predict touches mapped pages too
            series[strategy] = [
                (t - start, (m - done["anon_base"]) / 2**30) for t, m in samples if start - 0.2 <= t <= end + 0.05
            ]
        report["mapped_side_by_side"] = mapped_side_by_side(efs, args.load_repeats)
        shutil.rmtree(efs)
        if args.cold:
            report["cold"] = cold_first_predictions(work / "cold", args.cold_gib)
        else:
            print("\n(--cold: first prediction with the page cache dropped, needs root; not run)")

        print("\npredict handler overhead (functions/predict/app.py, real API Gateway events, X-Ray SDK as in Lambda)")
        print(f"vs bare model.predict, 100-tree RandomForestClassifier, 20 features, median of {args.repeats} pairs:")
        done, _, _ = run_child(["--child", "overhead", str(efs), str(args.repeats)], sample=False)
        report["overhead"] = done["figures"]
        for rows, f in done["figures"].items():
            print(
                f"  {rows:>5} row(s): bare {f['bare_ms']:.3f} ms, handler {f['handler_ms']:.3f} ms; overhead "
                f"side by side {f['overhead_ms']:.3f} ms ({f['overhead_pct']:.1f}%), "
                f"own {f['own_overhead_ms']:.3f} ms ({f['own_overhead_pct']:.1f}%)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    chart(series, gib, RESULTS / "load_memory.png")
    (RESULTS / "load_bench.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {RESULTS / 'load_memory.png'} and {RESULTS / 'load_bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
