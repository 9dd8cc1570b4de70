"""Specs of staging's streaming rewriter (issue 12) and the scanner rules it relies on (issue 15): every
upload becomes the mapped layout and loads bit-for-bit as `pickle.load` of the original; a malformed
layout never gets past staging; a damaged file answers 503; frames, calls, dtypes and allocations the
standard pickler never writes are refused."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import struct
import warnings
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from bigpickle.config import Settings
from bigpickle.errors import ModelIntegrityError, ModelNotReadyError
from bigpickle.loading import ModelRegistry
from bigpickle.loading.capacity import estimate_load
from bigpickle.loading.formats import convert, load_model_file, read_layout, save_model
from bigpickle.safety import Allowlist, PickleScanner
from bigpickle.safety.inspect import inspect_file
from bigpickle.safety.layout import MAGIC, TRAILER
from bigpickle.safety.rewriter import file_checksum, rewrite_file
from bigpickle.safety.uploads import check_bigpickle
from bigpickle.staging import stage_object
from bigpickle.store import ModelStore
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from tests.helpers import BUCKET, load_published
from tests.safety.corpus import LEGIT_MODELS, _args, _global

FORMATS = ["protocol 2", "protocol 3", "protocol 4", "protocol 5", "joblib"]


@pytest.fixture(scope="module")
def corpus() -> dict[str, tuple[Any, Any]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: make() for name, make in LEGIT_MODELS.items()}


def upload(model: Any, how: str, folder: Path) -> tuple[Path, str]:
    if how == "joblib":
        path = folder / "model.joblib"
        joblib.dump(model, path)
        return path, "joblib"
    path = folder / "model.pkl"
    path.write_bytes(pickle.dumps(model, protocol=int(how[-1])))
    return path, "pickle"


def original(path: Path, fmt: str) -> Any:
    return joblib.load(path) if fmt == "joblib" else pickle.loads(path.read_bytes())


def answers(model: Any, X: Any) -> list[bytes]:
    """predict and predict_proba, as bytes: equal means bit-for-bit."""
    out = [np.asarray(model.predict(X)).tobytes()]
    if hasattr(model, "predict_proba"):
        out.append(np.asarray(model.predict_proba(X)).tobytes())
    return out


# -- identical models --


@pytest.mark.parametrize("how", FORMATS)
def test_every_corpus_model_rewritten_with_its_arrays_out_of_band_predicts_bit_for_bit_mapped_and_not(
    how: str, corpus: dict[str, tuple[Any, Any]], tmp_path: Path
) -> None:
    for name, (model, X) in corpus.items():
        folder = tmp_path / name
        folder.mkdir()
        source, fmt = upload(model, how, folder)
        # every array payload of at least 1 byte moves out of band: the corpus's arrays are small
        report, result = rewrite_file(source, fmt, folder / "model.bpk", min_out_of_band=1)

        assert report.safe and result.layout is not None, (name, result.reason)
        if how != "protocol 2":  # protocol 2 keeps arrays in band (`_codecs.encode` text): exact, not mapped
            assert result.layout.buffers, name
        expected = answers(original(source, fmt), X)
        for mmap in (False, True):
            loaded = load_model_file(folder / "model.bpk", "bigpickle", mmap=mmap, layout=result.details())
            assert answers(loaded, X) == expected, (name, mmap)


@pytest.mark.parametrize("how", ["protocol 3", "protocol 4", "protocol 5", "joblib", "numpy.core spelling"])
@pytest.mark.parametrize("order", ["C", "F"])
def test_a_large_array_goes_out_of_band_aligned_in_either_order_and_comes_back_mapped(
    how: str, order: str, tmp_path: Path
) -> None:
    array = np.asarray(np.random.default_rng(0).random((300, 200)), order=order)
    source, fmt = upload(
        {"coef": array, "name": "kept in band"}, "protocol 3" if how.startswith("numpy") else how, tmp_path
    )
    if how.startswith("numpy"):  # numpy 1 names numpy.core; protocol 3 writes names as text lines
        source.write_bytes(source.read_bytes().replace(b"numpy._core.", b"numpy.core."))

    report, result = rewrite_file(source, fmt, tmp_path / "model.bpk")
    loaded = load_model_file(tmp_path / "model.bpk", "bigpickle", mmap=True, layout=result.details())

    assert report.safe and result.layout is not None
    ((offset, length, copied),) = result.layout.buffers
    assert offset % 4096 == 0 and length == array.nbytes and not copied
    assert loaded["coef"].tobytes(order="A") == array.tobytes(order="A") and loaded["name"] == "kept in band"
    assert loaded["coef"].flags.f_contiguous == (order == "F") and not loaded["coef"].flags.writeable


def test_a_forest_marks_its_node_buffers_as_copied_and_the_guard_prices_them_as_anonymous(
    corpus: dict[str, tuple[Any, Any]], tmp_path: Path
) -> None:
    source, fmt = upload(corpus["random-forest"][0], "protocol 5", tmp_path)
    _, result = rewrite_file(source, fmt, tmp_path / "model.bpk", min_out_of_band=1)

    assert result.layout is not None and result.layout.copied_bytes > 0  # Tree.__setstate__ copies nodes


def test_convert_streams_through_the_rewriter(corpus: dict[str, tuple[Any, Any]], tmp_path: Path) -> None:
    model, X = corpus["k-neighbors"]
    source, _ = upload(model, "protocol 4", tmp_path)

    facts = convert(source, tmp_path / "out.bpk")

    assert facts["layout"]["rewritten"] and facts["target_format"] == "bigpickle"
    assert answers(load_model_file(tmp_path / "out.bpk", "bigpickle"), X) == answers(model, X)
    inspected = inspect_file(tmp_path / "out.bpk", Allowlist())
    assert inspected["verdict"] == "safe to load" and inspected["oob_buffers"] == facts["layout"]["buffers"]


# -- staging: publishes the mapped layout, refuses a malformed one --


def test_staging_publishes_an_upload_rewritten_with_its_provenance_and_the_published_digests(
    moto_s3: Any, store: ModelStore, settings: Settings, tmp_path: Path
) -> None:
    X = np.random.default_rng(1).random((2000, 20))
    model = KNeighborsClassifier().fit(X, (X[:, 0] > 0.5).astype(int))
    data = pickle.dumps(model, protocol=4)
    moto_s3.put_object(Bucket=BUCKET, Key="models/knn/model.pkl", Body=data)

    stage_object(moto_s3, store, settings, BUCKET, "models/knn/model.pkl")
    manifest = store.read_manifest("knn")
    published = store.model_path(manifest)
    layout = manifest.details["layout"]

    assert manifest.sha256 == hashlib.sha256(data).hexdigest() and manifest.bytes == len(data)
    assert (manifest.format, published.name, manifest.details["source"]["file"]) == (
        "bigpickle",
        "model.bpk",
        "model.pkl",
    )
    assert layout["rewritten"] and layout["file_checksum"] == file_checksum(published)
    assert layout["buffer_bytes"] >= X.nbytes and not (published.parent / "model.pkl").exists()
    assert manifest.details["allocation_bytes"] >= len(data) - X.nbytes
    cost = estimate_load(manifest, published, mmap=True)
    assert cost.mapped_bytes >= X.nbytes and cost.bytes < X.nbytes / 4  # mapped: page cache, not anonymous
    assert answers(load_published(store, "knn", mmap=True), X) == answers(model, X)


@pytest.mark.parametrize("mmap", ["on", "off"])
def test_a_model_larger_than_half_the_stage_function_is_trial_loaded_when_the_predict_side_maps_it(
    mmap: str, moto_s3: Any, store: ModelStore
) -> None:
    # given a 120 MB model of one array, and a stage function of 600 MiB (a trial load may take half of it)
    X = np.random.default_rng(5).random((150_000, 100))
    moto_s3.put_object(
        Bucket=BUCKET, Key="models/big/model.pkl", Body=pickle.dumps(KNeighborsClassifier().fit(X, X[:, 0] > 0.5))
    )
    env = {"MODELS_ROOT": str(store.root), "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "600", "MODEL_MMAP": mmap}

    # when it is staged
    stage_object(moto_s3, store, Settings.from_env(env), BUCKET, "models/big/model.pkl")

    # then, mapped as the predict side will map it, its trial load fits (and its probe recorded the features);
    # read into memory (3x its bytes) it would not, and is published without one
    features = store.read_manifest("big").features
    assert (features is not None and len(features) == 100) if mmap == "on" else features is None


def test_a_rewritten_file_that_fails_its_own_check_is_never_published_the_upload_is_whole(
    moto_s3: Any, store: ModelStore, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a rewriter whose output the .bpk check refuses (a rewriter bug: the check is its guard)
    from bigpickle.safety import uploads

    def refuse(path: Path, allowlist: Allowlist) -> Any:
        report = PickleScanner("bigpickle", allowlist).report
        report.problems.append("a stream the scanner refuses")
        return report, None

    monkeypatch.setattr(uploads, "check_bigpickle", refuse)
    X = np.random.default_rng(6).random((20_000, 16))  # 2.4 MiB: its bytes go out of band, held by the rewriter
    data = pickle.dumps(KNeighborsClassifier().fit(X, X[:, 0] > 0.5), protocol=4)
    moto_s3.put_object(Bucket=BUCKET, Key="models/knn/model.pkl", Body=data)

    # when it is staged
    stage_object(moto_s3, store, settings, BUCKET, "models/knn/model.pkl")

    # then the upload is published as it came, byte for byte (the bytes the rewriter held put back), and why
    manifest = store.read_manifest("knn")
    assert (manifest.file, manifest.format) == ("model.pkl", "pickle")
    assert store.model_path(manifest).read_bytes() == data
    assert "did not check out (a stream the scanner refuses)" in manifest.details["layout"]["reason"]


def bpk_with_index(tmp_path: Path, edit: Any) -> Path:
    """A valid .bpk whose index JSON is replaced by `edit(index)` (bytes, or an object to dump)."""
    X = np.random.default_rng(2).random((500, 40))
    path = tmp_path / "model.bpk"
    save_model(KNeighborsClassifier().fit(X, X[:, 0] > 0.5), path, "bigpickle")
    data = path.read_bytes()
    index_offset, index_length, _ = TRAILER.unpack(data[-TRAILER.size :])
    new = edit(json.loads(data[index_offset : index_offset + index_length]))
    new = new if isinstance(new, bytes) else json.dumps(new).encode()
    path.write_bytes(data[:index_offset] + new + TRAILER.pack(index_offset, len(new), MAGIC))
    return path


def _in_the_padding(index: dict[str, Any]) -> list[Any]:
    """Eight bytes of the zeros between the stream and the first buffer: a valid place, never referred to."""
    return [index["pickle_bytes"] + 8, 8, False]


MALFORMED = {
    "an index that is not JSON": (lambda index: b"{not json", "not JSON"),
    "an index that is a JSON list": (lambda index: [1, 2], "not an object"),
    "a non-integer offset": (lambda index: {**index, "buffers": [["64", 8, False]]}, "not a non-negative integer"),
    "a stream length far beyond the file": (lambda index: {**index, "pickle_bytes": 10**12}, "the stream"),
    "a buffer the stream never uses": (lambda index: {**index, "buffers": [_in_the_padding(index), *index["buffers"]]},
        "refers to"),
    "a stream length short of its STOP": (lambda index: {**index, "pickle_bytes": index["pickle_bytes"] - 1}, "STOP"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_bpk_upload_is_refused_with_the_reason(case: str, tmp_path: Path) -> None:
    edit, reason = MALFORMED[case]
    path = bpk_with_index(tmp_path, edit)

    report, published = check_bigpickle(path, Allowlist())

    assert published is None and not report.safe
    assert any(reason in problem for problem in report.reasons()), report.reasons()


def test_a_malformed_bpk_upload_is_not_published_and_the_current_version_keeps_serving(
    moto_s3: Any, store: ModelStore, settings: Settings, tmp_path: Path
) -> None:
    good = bpk_with_index(tmp_path, lambda index: index).read_bytes()
    moto_s3.put_object(Bucket=BUCKET, Key="models/knn/model.bpk", Body=good)
    current = stage_object(moto_s3, store, settings, BUCKET, "models/knn/model.bpk").version
    moto_s3.put_object(
        Bucket=BUCKET, Key="models/knn/model.bpk", Body=bpk_with_index(tmp_path, lambda i: [1]).read_bytes()
    )

    with pytest.raises(Exception, match="not an object"):
        stage_object(moto_s3, store, settings, BUCKET, "models/knn/model.bpk")

    assert store.current_version("knn") == current and store.list_versions("knn") == [current]


@pytest.mark.parametrize("damage", ["trailer", "stream byte", "buffer byte"])
def test_a_file_damaged_after_staging_answers_503_naming_model_version_and_what_to_do(
    damage: str, moto_s3: Any, store: ModelStore, settings: Settings
) -> None:
    X = np.random.default_rng(3).random((3000, 10))
    moto_s3.put_object(
        Bucket=BUCKET, Key="models/lr/model.pkl", Body=pickle.dumps(KNeighborsClassifier().fit(X, X[:, 1] > 0.5))
    )
    version = stage_object(moto_s3, store, settings, BUCKET, "models/lr/model.pkl").version
    manifest = store.read_manifest("lr")
    path = store.model_path(manifest)
    data = bytearray(path.read_bytes())
    at = {"trailer": len(data) - 1, "stream byte": manifest.details["layout"]["file_bytes"] - 200, "buffer byte": 100}
    data[at[damage]] ^= 0xFF
    path.write_bytes(bytes(data))

    for verify in ("stream", "full"):
        registry = ModelRegistry.from_settings(
            Settings.from_env({"MODELS_ROOT": str(store.root), "MODEL_VERIFY": verify})
        )
        if damage == "buffer byte" and verify == "stream":  # by design: buffers are hashed only with full
            registry.get("lr", until_loaded=True)
            continue
        with pytest.raises(ModelNotReadyError) as caught:
            registry.get("lr", until_loaded=True)
        assert caught.value.status == 503 and "lr" in str(caught.value) and version in str(caught.value)
        assert "Re-stage" in str(caught.value)
        assert damage == "trailer" or isinstance(caught.value, ModelIntegrityError)


# -- one parse: frames --


def test_an_argument_that_crosses_its_frames_end_is_refused() -> None:
    data = bytearray(pickle.dumps({"a": "x" * 100, "b": 1}, protocol=4))
    assert data[2] == 0x95
    (length,) = struct.unpack_from("<Q", data, 3)
    struct.pack_into("<Q", data, 3, length - 60)  # the frame now ends inside the 100-byte string

    scanner = PickleScanner()
    scanner.update(bytes(data))

    assert any("crosses the end of its frame" in p for p in scanner.finish().problems)


def test_a_frame_inside_another_frame_is_refused() -> None:
    body = pickle.dumps([1, 2, 3], protocol=4)[11:]  # the opcodes of its one frame
    inner = b"\x95" + struct.pack("<Q", len(body)) + body
    data = b"\x80\x04\x95" + struct.pack("<Q", len(inner) + 4) + b"N0" + inner

    scanner = PickleScanner()
    scanner.update(data)

    assert any("inside the previous frame" in p for p in scanner.finish().problems)


def test_the_rewritten_stream_is_canonical_frames_end_between_opcodes(
    corpus: dict[str, tuple[Any, Any]], tmp_path: Path
) -> None:
    source, fmt = upload(corpus["hist-gradient-boosting"][0], "protocol 5", tmp_path)
    rewrite_file(source, fmt, tmp_path / "model.bpk", min_out_of_band=1)
    layout = read_layout(tmp_path / "model.bpk")
    stream = (tmp_path / "model.bpk").read_bytes()[layout.stream_offset : layout.stream_offset + layout.pickle_bytes]

    scanner = PickleScanner("bigpickle", Allowlist())
    scanner.update(stream)

    assert scanner.verdict().stream_bytes == len(stream) and scanner.report.oob_buffers == len(layout.buffers)


# -- references, not calls; memory-safe arrays; allocation from the stream --


def scan(data: bytes) -> list[str]:
    scanner = PickleScanner()
    scanner.update(data)
    return scanner.finish().reasons()


def test_a_ufunc_called_on_a_constructor_bomb_is_refused_before_anything_runs() -> None:
    bomb = (
        b"\x80\x04"
        + _global("numpy", "exp", 4)
        + _global("numpy", "ndarray", 4)
        + _args((150_000_000,), "f8")
        + b"R\x85R."
    )
    reasons = scan(bomb)

    assert any("numpy.ndarray, which a model may only reference" in r for r in reasons)
    assert any("numpy.exp, which a model may only reference" in r for r in reasons)


def test_a_set_of_a_huge_range_is_refused_as_unbounded() -> None:
    data = b"\x80\x04" + _global("builtins", "set", 4) + _global("builtins", "range", 4) + _args(10**12) + b"R\x85R."

    assert any("do not bound" in r for r in scan(data))


def test_the_allocation_figure_counts_payloads_and_sized_constructors() -> None:
    data = b"\x80\x04" + _global("builtins", "bytearray", 4) + _args(10**9) + b"R."
    scanner = PickleScanner()
    scanner.update(data)

    assert scanner.verdict().allocation_bytes >= 10**9


@pytest.mark.parametrize(
    ("elsize", "reason"),
    [(b"K\x10", "element size says 16"), (_global("numpy", "int64", 4) + b"C\x08" + b"\x08" * 8 + b"\x86R", "")],
)
def test_a_forged_dtype_state_is_refused(elsize: bytes, reason: str) -> None:
    dtype = _global("numpy", "dtype", 4) + _args("f8", False, True) + b"R"
    state = b"(K\x03\x8c\x01<NNN" + elsize + b"J\xff\xff\xff\xffK\x00tb"  # (3, '<', -, -, -, elsize, -1, 0)
    data = b"\x80\x04" + dtype + state + b"."

    reasons = scan(data)

    assert any("dtype" in r and reason in r for r in reasons), reasons


def test_frombuffer_over_fewer_bytes_than_its_shape_needs_is_refused() -> None:
    array = pickle.dumps(np.zeros(4), protocol=5)
    forged = array.replace(b"K\x04\x85", b"J\x00\x00\x10\x00\x85")  # shape (1048576,) over 32 bytes
    forged = forged[:3] + struct.pack("<Q", struct.unpack_from("<Q", forged, 3)[0] + 3) + forged[11:]

    assert any("needs 8388608 bytes" in r for r in scan(forged))


def test_a_legitimate_logistic_regression_is_not_refused_by_the_new_rules(corpus: dict[str, Any]) -> None:
    X, y = np.random.default_rng(4).random((50, 3)), np.arange(50) % 2
    for protocol in (2, 3, 4, 5):
        assert scan(pickle.dumps(LogisticRegression().fit(X, y), protocol=protocol)) == []
    buffer = io.BytesIO()
    joblib.dump(corpus["svc"][0], buffer)
    scanner = PickleScanner("joblib")
    scanner.update(buffer.getvalue())
    assert scanner.finish().reasons() == []
