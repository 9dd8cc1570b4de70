"""Never run an untrusted pickle: hostile pickles are refused at staging (scanner) and at loading
(restricted unpickler), real scikit-learn models pass both and predict exactly as before."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import tracemalloc
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import sklearn
from bigpickle.cli import main
from bigpickle.config import Settings
from bigpickle.errors import ModelIntegrityError, UnsafePickleError
from bigpickle.loading import load_model_file, save_model
from bigpickle.safety import Allowlist, PickleScanner
from bigpickle.safety.unpickler import RestrictedUnpickler, load_verified
from bigpickle.staging import stage_object
from bigpickle.store import ModelStore
from bigpickle.units import MiB
from sklearn.datasets import load_iris
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import FunctionTransformer

from tests.helpers import BUCKET, load_published
from tests.safety.corpus import LEGIT_MODELS, hostile_pickles

HOSTILE_NAMES = sorted(hostile_pickles(Path("/marker")))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "pwned"


def scan(data: bytes, fmt: str = "pickle", chunk: int = 4093, allowlist: Allowlist | None = None) -> Any:
    scanner = PickleScanner(fmt, allowlist)
    for i in range(0, len(data), chunk):
        scanner.update(data[i : i + chunk])
    return scanner.finish()


# -- hostile corpus --


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_pickle_is_refused_by_the_scanner_with_its_reason(name: str, marker: Path) -> None:
    data = hostile_pickles(marker)[name]

    report = scan(data, chunk=3)  # tiny chunks: every opcode and argument split across updates

    assert not report.safe
    with pytest.raises(UnsafePickleError) as refused:
        report.raise_if_unsafe()
    assert refused.value.reasons == report.reasons()
    assert not marker.exists()


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_pickle_in_s3_is_never_published_and_the_error_names_why(
    name: str, marker: Path, moto_s3: Any, store: ModelStore, settings: Settings
) -> None:
    data = hostile_pickles(marker)[name]
    moto_s3.put_object(Bucket=BUCKET, Key="models/evil/model.pkl", Body=data)

    with pytest.raises(UnsafePickleError) as refused:
        stage_object(moto_s3, store, settings, BUCKET, "models/evil/model.pkl")

    assert store.list_versions("evil") == [] and store.current_version("evil") is None
    assert not list((store.root / "evil").rglob("model.pkl"))  # the copy is removed too
    expected = scan(data).reasons()[0]
    assert expected in refused.value.message
    assert not marker.exists()


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_pickle_on_efs_is_refused_at_load_and_never_runs(name: str, marker: Path, tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(hostile_pickles(marker)[name])

    with pytest.raises(UnsafePickleError):
        load_model_file(path, "pickle")

    assert not marker.exists()


def _imports_a_forbidden_global(name: str) -> bool:
    return bool(scan(hostile_pickles(Path("/marker"))[name]).forbidden)


# Protocol tricks that use allowed names only are the scanner's to refuse (the tests above, both layers).
@pytest.mark.parametrize("name", [n for n in HOSTILE_NAMES if _imports_a_forbidden_global(n)])
def test_find_class_alone_refuses_every_global_outside_the_allowlist(name: str, marker: Path) -> None:
    data = hostile_pickles(marker)[name]
    forbidden = scan(data).forbidden

    with pytest.raises(UnsafePickleError) as refused:
        RestrictedUnpickler(io.BytesIO(data), Allowlist()).load()

    assert refused.value.forbidden[0].split(".")[-1] in {f.split(".")[-1] for f in forbidden}
    assert not marker.exists()


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("mmap", [False, True])
def test_a_joblib_object_array_hiding_a_call_is_refused_at_both_layers(
    marker: Path, tmp_path: Path, mmap: bool
) -> None:
    path = tmp_path / "model.joblib"
    joblib.dump({"weights": np.arange(1000.0), "objects": np.array([_Evil(marker)], dtype=object)}, path)
    data = path.read_bytes()

    report = scan(data, "joblib")

    assert report.forbidden == {"posix.system"} or report.forbidden == {"os.system"}
    with pytest.raises(UnsafePickleError, match="system"):
        load_model_file(path, "joblib", mmap=mmap)
    assert not marker.exists()


def test_compressed_joblib_is_refused_with_what_to_do(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    joblib.dump(np.arange(10), buffer, compress=3)

    report = scan(buffer.getvalue(), "joblib")

    assert not report.safe
    assert "compress=0" in report.problems[0]


# -- legitimate corpus: staged, loaded, predicting identically --


@pytest.fixture(scope="module")
def fitted() -> dict[str, tuple[Any, Any]]:
    return {name: make() for name, make in LEGIT_MODELS.items()}


def _serialise(model: Any, how: str) -> tuple[bytes, str]:
    if how == "joblib":
        buffer = io.BytesIO()
        joblib.dump(model, buffer)
        return buffer.getvalue(), "model.joblib"
    return pickle.dumps(model, protocol=int(how[-1])), "model.pkl"


def test_the_legitimate_corpus_covers_at_least_twelve_estimator_types(fitted: dict[str, Any]) -> None:
    assert len({type(model).__name__ for model, _ in fitted.values()} | {"ColumnTransformer", "TfidfVectorizer"}) >= 12
    assert len(fitted) >= 12


@pytest.mark.parametrize("how", ["protocol 4", "protocol 5", "joblib"])
@pytest.mark.parametrize("name", sorted(LEGIT_MODELS))
def test_a_real_model_is_staged_loaded_and_predicts_exactly_as_before(
    name: str, how: str, fitted: dict[str, Any], moto_s3: Any, store: ModelStore, settings: Settings
) -> None:
    model, X = fitted[name]
    data, file = _serialise(model, how)
    moto_s3.put_object(Bucket=BUCKET, Key=f"models/{name}/{file}", Body=data)

    result = stage_object(moto_s3, store, settings, BUCKET, f"models/{name}/{file}")
    manifest = store.read_manifest(name)
    loaded = load_published(store, name)

    assert result.status == "published"
    assert manifest.details["sklearn_version"] == sklearn.__version__
    names_numpy_core = any(g.startswith("numpy._core.") for g in manifest.details["globals"])
    assert manifest.details["numpy_major"] == ("2.x" if names_numpy_core else None)  # joblib wraps its arrays
    assert manifest.details["pickle_protocol"] == (int(how[-1]) if how != "joblib" else pickle.DEFAULT_PROTOCOL)
    assert all(g.split(".")[0] in {"sklearn", "numpy", "scipy", "builtins", "copyreg", "joblib"}
               for g in manifest.details["globals"])  # fmt: skip
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_joblib_mapped_load_gives_read_only_memmaps_that_predict_the_same(
    fitted: dict[str, Any], tmp_path: Path
) -> None:
    model, X = fitted["random-forest"]
    path = tmp_path / "model.joblib"
    joblib.dump(model, path)

    loaded = load_model_file(path, "joblib", mmap=True, sha256=hashlib.sha256(path.read_bytes()).hexdigest())

    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_a_file_changed_after_staging_is_refused_by_its_sha256(fitted: dict[str, Any], tmp_path: Path) -> None:
    model, _ = fitted["ridge"]
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(model, protocol=5))
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    data = bytearray(path.read_bytes())
    data[data.find(model.coef_.tobytes())] ^= 0x01  # one bit of a coefficient: still a loadable pickle
    path.write_bytes(bytes(data))

    with pytest.raises(ModelIntegrityError, match="Re-stage"):
        load_model_file(path, "pickle", sha256=sha256)


def test_allowlist_extra_lets_an_operator_admit_one_more_function(tmp_path: Path) -> None:
    model = FunctionTransformer(np.nan_to_num).fit([[1.0]])
    data = pickle.dumps(model, protocol=5)
    path = tmp_path / "model.pkl"
    path.write_bytes(data)
    extra = Settings.from_env({"PICKLE_ALLOWLIST_EXTRA": "numpy:nan_to_num"}).pickle_allowlist_extra

    assert scan(data).forbidden == {"numpy.nan_to_num"}
    assert scan(data, allowlist=Allowlist(extra)).safe
    with pytest.raises(UnsafePickleError, match=r"numpy\.nan_to_num"):
        load_verified(path, "pickle", allowlist=Allowlist())
    assert load_verified(path, "pickle", allowlist=Allowlist(extra)).transform([[np.nan]])[0][0] == 0.0


def test_large_payloads_are_counted_not_held(tmp_path: Path) -> None:
    data = pickle.dumps({"weights": np.ones(8 * MiB)}, protocol=5)  # 64 MiB of float64 in one BYTEARRAY8
    scanner = PickleScanner()

    tracemalloc.start()
    for i in range(0, len(data), 4 * MiB):
        scanner.update(memoryview(data)[i : i + 4 * MiB])
    report = scanner.finish()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert report.safe and report.bytes == len(data)
    assert peak < 1 * MiB


def test_inspect_prints_protocol_size_globals_version_and_verdict(
    fitted: dict[str, Any], tmp_path: Path, marker: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, evil = tmp_path / "model.pkl", tmp_path / "evil.pkl"
    good.write_bytes(pickle.dumps(fitted["random-forest"][0], protocol=4))
    evil.write_bytes(hostile_pickles(marker)["builtins.exec"])

    good_exit = main(["inspect", str(good)])
    good_out = capsys.readouterr().out
    evil_exit = main(["inspect", "--json", str(evil)])
    evil_out = json.loads(capsys.readouterr().out)

    assert good_exit == 0
    for fact in ("pickle_protocol  4", f"bytes            {good.stat().st_size}", "sklearn.tree._tree.Tree",
                 f"sklearn_version  {sklearn.__version__}", "safe to load"):  # fmt: skip
        assert fact in good_out
    assert evil_exit == 1
    assert evil_out["verdict"] == "refused" and evil_out["globals"] == ["builtins.exec"]
    assert not marker.exists()


@pytest.mark.parametrize("mmap", [False, True])
def test_the_zero_copy_bigpickle_format_is_staged_scanned_and_loaded_with_its_buffers(
    mmap: bool, moto_s3: Any, store: ModelStore, settings: Settings, tmp_path: Path
) -> None:
    X, y = load_iris(return_X_y=True)
    X, y = np.repeat(X, 200, axis=0), np.repeat(y, 200)  # big enough for out-of-band buffers
    model = KNeighborsClassifier().fit(X, y)
    source = tmp_path / "model.bpk"
    save_model(model, source, "bigpickle")
    moto_s3.put_object(Bucket=BUCKET, Key="models/knn/model.bpk", Body=source.read_bytes())

    stage_object(moto_s3, store, settings, BUCKET, "models/knn/model.bpk")
    manifest = store.read_manifest("knn")
    loaded = load_model_file(store.model_path(manifest), "bigpickle", mmap=mmap, sha256=manifest.sha256)

    assert manifest.details["oob_buffers"] >= 1
    np.testing.assert_array_equal(loaded.predict(X[::97]), model.predict(X[::97]))


def test_a_hostile_stream_is_refused_in_the_bigpickle_format_too(marker: Path, tmp_path: Path) -> None:
    path = tmp_path / "model.bpk"
    path.write_bytes(hostile_pickles(marker)["os.system"] + bytes(4096))

    assert scan(path.read_bytes(), "bigpickle").forbidden == {"os.system"}
    with pytest.raises(UnsafePickleError, match=r"os\.system"):
        load_verified(path, "bigpickle", buffers=[])
    assert not marker.exists()


def test_the_scanner_steps_over_joblib_arrays_of_every_layout(tmp_path: Path) -> None:
    arrays = {
        "float64": np.arange(10.0),
        "int32": np.arange(3, dtype=np.int32),
        "bool": np.array([True, False]),
        "complex": np.zeros(2, dtype=complex),
        "unicode": np.array(["abc", "de"]),
        "bytes": np.array([b"ab"]),
        "datetime": np.array(["2020-01-01"], dtype="M8[s]"),
        "structured": np.zeros(3, dtype=[("a", "<f8"), ("b", "<u4")]),
        "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        "objects": np.array([1, "x", None], dtype=object),
    }
    path = tmp_path / "arrays.joblib"
    joblib.dump(arrays, path)

    report = scan(path.read_bytes(), "joblib", chunk=1000)
    loaded = load_model_file(path, "joblib", sha256=hashlib.sha256(path.read_bytes()).hexdigest())

    assert report.safe, report.reasons()
    for name, array in arrays.items():
        np.testing.assert_array_equal(loaded[name], array)
