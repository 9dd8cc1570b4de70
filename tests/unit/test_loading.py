"""Loading: formats and mmap, the capacity guard, version safety, the registry's LRU, hot swap and rollback."""

from __future__ import annotations

import copy
import gc
import mmap
import pickle
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sklearn
from bigpickle.cli import main as cli_main
from bigpickle.errors import InsufficientMemoryError, ModelLoadError, ModelNotFoundError, ModelVersionMismatchError
from bigpickle.loading import ModelRegistry, load_model_file, save_model
from bigpickle.loading.capacity import LEGACY_PROTOCOL_FACTOR, MemoryBudget, estimate_load
from bigpickle.loading.formats import BUFFER_ALIGN, STREAM_ALIGN, TRAILER, convert, read_layout
from bigpickle.loading.rollback import rollback
from bigpickle.store import ModelStore
from sklearn.ensemble import RandomForestRegressor
from sklearn.neighbors import KNeighborsRegressor

from tests.helpers import publish_model

V1, V2, V3 = "20261126T120000Z-aaa", "20261126T130000Z-bbb", "20261126T140000Z-ccc"


@pytest.fixture(scope="module")
def neighbours() -> tuple[Any, np.ndarray]:
    """A model whose weight is one big array that stays an array after unpickling (mmap-able as is)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40_000, 10))
    return KNeighborsRegressor(n_neighbors=3, algorithm="brute").fit(X, X @ np.arange(10.0)), X


@pytest.fixture(scope="module")
def forest() -> tuple[Any, np.ndarray]:
    """A model whose big arrays are tree nodes, which scikit-learn copies out of any buffer on unpickle."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(20_000, 8))
    return RandomForestRegressor(n_estimators=3, random_state=0).fit(X, X[:, 0] + rng.normal(size=20_000)), X


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingStore(ModelStore):
    """The real store, counting pointer and manifest reads (the refresh check must stay one small read)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.pointer_reads = 0
        self.manifest_reads = 0

    def current_version(self, name: str) -> str | None:
        self.pointer_reads += 1
        return super().current_version(name)

    def read_manifest(self, name: str, version: str | None = None) -> Any:
        self.manifest_reads += 1
        return super().read_manifest(name, version)


def registry_for(root: Path, **options: Any) -> ModelRegistry:
    options.setdefault("budget", MemoryBudget(limit=None, baseline=0))
    return ModelRegistry(CountingStore(root), **options)


# -- formats and mmap --


def test_a_bpk_file_is_a_plain_pickle_stream_then_aligned_buffers_then_an_index(
    tmp_path: Path, neighbours: tuple[Any, np.ndarray]
) -> None:
    path = tmp_path / "m.bpk"
    save_model(neighbours[0], path, "bigpickle")

    layout = read_layout(path)
    data = path.read_bytes()

    assert data[:2] == b"\x80\x05" and data[layout.pickle_bytes - 1 : layout.pickle_bytes] == pickle.STOP
    assert layout.buffers[0][0] % STREAM_ALIGN == 0
    assert all(offset % BUFFER_ALIGN == 0 for offset, _, _ in layout.buffers)
    assert layout.buffer_bytes >= neighbours[1].nbytes  # the training matrix travels out of band
    assert data[-8:] == b"BIGPKL01" and len(data) - TRAILER.size > layout.buffers[-1][0] + layout.buffers[-1][1] - 1


@pytest.mark.parametrize("mmap", [False, True])
def test_bpk_predicts_like_the_original_with_mmap_on_and_off(
    tmp_path: Path, neighbours: tuple[Any, np.ndarray], forest: tuple[Any, np.ndarray], mmap: bool
) -> None:
    for i, (model, X) in enumerate((neighbours, forest)):
        path = tmp_path / f"m{i}.bpk"
        save_model(model, path, "bigpickle")

        loaded = load_model_file(path, "bigpickle", mmap=mmap)

        assert np.array_equal(loaded.predict(X[:200]), model.predict(X[:200]))


def test_mmap_on_maps_big_arrays_read_only_from_the_file_and_off_reads_private_copies(
    tmp_path: Path, neighbours: tuple[Any, np.ndarray]
) -> None:
    path = tmp_path / "m.bpk"
    save_model(neighbours[0], path, "bigpickle")

    mapped = load_model_file(path, "bigpickle", mmap=True)._fit_X
    private = load_model_file(path, "bigpickle", mmap=False)._fit_X

    owner = mapped
    while isinstance(owner, np.ndarray):
        owner = owner.base
    assert not mapped.flags.writeable and isinstance(owner, memoryview) and isinstance(owner.obj, mmap.mmap)
    assert private.flags.writeable
    assert np.array_equal(mapped, private)


@pytest.mark.parametrize("mmap", [False, True])
def test_joblib_files_load_with_and_without_mmap_mode(
    tmp_path: Path, neighbours: tuple[Any, np.ndarray], mmap: bool
) -> None:
    model, X = neighbours
    path = tmp_path / "m.joblib"
    save_model(model, path, "joblib")

    loaded = load_model_file(path, "joblib", mmap=mmap)

    assert loaded._fit_X.flags.writeable is not mmap
    assert np.array_equal(loaded.predict(X[:100]), model.predict(X[:100]))


def test_a_bpk_file_with_a_damaged_trailer_is_a_load_error(tmp_path: Path, neighbours: tuple[Any, np.ndarray]) -> None:
    path = tmp_path / "m.bpk"
    save_model(neighbours[0], path, "bigpickle")
    path.write_bytes(path.read_bytes()[:-1])

    with pytest.raises(ModelLoadError, match="trailer"):
        load_model_file(path, "bigpickle", mmap=True)


def test_convert_resaves_an_old_protocol_pickle_as_bpk_that_predicts_the_same(
    tmp_path: Path, trained: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    model, X = trained["iris"]
    source, target = tmp_path / "old.pkl", tmp_path / "new.bpk"
    source.write_bytes(pickle.dumps(model, protocol=2))

    assert cli_main(["convert", str(source), str(target)]) == 0

    out = capsys.readouterr().out
    assert '"source_protocol": 2' in out and '"target_format": "bigpickle"' in out
    assert np.array_equal(load_model_file(target, "bigpickle", mmap=True).predict(X), model.predict(X))
    assert convert(target, tmp_path / "back.pkl")["source_format"] == "bigpickle"


# -- what a load costs --


def test_an_old_protocol_pickle_is_priced_at_its_measured_cost_and_protocol_5_at_its_bytes(
    tmp_path: Path, trained: dict[str, Any]
) -> None:
    old = publish_model(tmp_path, "old", trained["iris"][0], protocol=2)
    new = publish_model(tmp_path, "new", trained["iris"][0], protocol=5)
    store = ModelStore(tmp_path)

    old_cost = estimate_load(old, store.model_path(old), mmap=False)
    new_cost = estimate_load(new, store.model_path(new), mmap=False)

    assert (old_cost.protocol, old_cost.legacy, old_cost.bytes) == (2, True, int(old.bytes * LEGACY_PROTOCOL_FACTOR))
    assert (new_cost.protocol, new_cost.legacy, new_cost.bytes) == (5, False, new.bytes)


def test_a_mapped_bpk_load_costs_its_stream_plus_only_the_buffers_trees_copy(
    tmp_path: Path, neighbours: tuple[Any, np.ndarray], forest: tuple[Any, np.ndarray]
) -> None:
    store = ModelStore(tmp_path)
    knn = publish_model(tmp_path, "knn", neighbours[0], suffix=".bpk")
    trees = publish_model(tmp_path, "trees", forest[0], suffix=".bpk")

    knn_cost = estimate_load(knn, store.model_path(knn), mmap=True)
    trees_cost = estimate_load(trees, store.model_path(trees), mmap=True)

    assert knn_cost.bytes < knn.bytes / 10 and knn_cost.mapped_bytes >= neighbours[1].nbytes
    layout = read_layout(store.model_path(trees))
    whole = layout.pickle_bytes + layout.buffer_bytes
    assert trees_cost.bytes == whole and trees_cost.mapped_bytes == 0  # Tree.__setstate__ memcpys nodes
    knn_layout = read_layout(store.model_path(knn))
    assert (
        estimate_load(knn, store.model_path(knn), mmap=False).bytes == knn_layout.pickle_bytes + knn_layout.buffer_bytes
    )


# -- capacity guard --


def test_a_model_bigger_than_the_function_is_refused_naming_both_numbers(
    tmp_path: Path, neighbours: tuple[Any, np.ndarray]
) -> None:
    manifest = publish_model(tmp_path, "knn", neighbours[0])
    loads: list[Path] = []
    budget = MemoryBudget(limit=1024 * 1024, baseline=0)
    registry = registry_for(tmp_path, budget=budget, loader=lambda path, fmt, **options: loads.append(path))

    with pytest.raises(InsufficientMemoryError) as refused:
        registry.get("knn")

    need_mib = round(manifest.bytes / 2**20)
    assert f"needs about {need_mib} MiB" in refused.value.message and "has 1 MiB" in refused.value.message
    assert refused.value.status == 503 and loads == []  # refused before a single byte was read


def test_mmap_on_lets_a_model_bigger_than_the_function_load_when_its_arrays_stay_mapped(
    tmp_path: Path, neighbours: tuple[Any, np.ndarray]
) -> None:
    model, X = neighbours
    manifest = publish_model(tmp_path, "knn", model, suffix=".bpk")
    budget = MemoryBudget(limit=manifest.bytes // 2, baseline=0)

    with pytest.raises(InsufficientMemoryError):
        registry_for(tmp_path, budget=budget, mmap=False).get("knn")
    loaded = registry_for(tmp_path, budget=budget, mmap=True).get("knn")

    assert np.array_equal(loaded.model.predict(X[:50]), model.predict(X[:50]))


# -- several models, least recently used evicted first --


def test_several_models_share_the_memory_and_the_least_recently_used_is_evicted(
    tmp_path: Path, trained: dict[str, Any]
) -> None:
    model = trained["iris"][0]
    sizes = {name: publish_model(tmp_path, name, model).bytes for name in ("a", "b", "c")}
    registry = registry_for(tmp_path, budget=MemoryBudget(limit=int(2.5 * sizes["a"]), baseline=0))

    registry.get("a")
    registry.get("b")
    registry.get("a")  # a is now more recently used than b
    registry.get("c")

    states = {m["name"]: m["state"] for m in registry.list_models()["models"]}
    assert states == {"a": "ready", "b": "not_loaded", "c": "ready"}
    assert registry.list_models()["memory"]["models_bytes"] == sizes["a"] + sizes["c"]


def test_a_model_that_cannot_fit_even_alone_evicts_nothing(tmp_path: Path, trained: dict[str, Any]) -> None:
    small = publish_model(tmp_path, "small", trained["iris"][0])
    publish_model(tmp_path, "big", trained["iris"][0], protocol=2)  # priced at 2.3x
    registry = registry_for(tmp_path, budget=MemoryBudget(limit=int(1.5 * small.bytes), baseline=0))
    registry.get("small")

    with pytest.raises(InsufficientMemoryError):
        registry.get("big")

    assert registry.state("small") == ("ready", small.version)


# -- the garbage collector stays off the request path --


@pytest.fixture
def heap_restored() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_a_loaded_model_is_frozen_out_of_collections_and_an_evicted_one_is_collected_cycles_and_all(
    tmp_path: Path, trained: dict[str, Any], heap_restored: None
) -> None:
    cyclic = copy.deepcopy(trained["iris"][0])
    cyclic.cycle_ = [cyclic]  # freed only by a collection, never by reference counting alone
    size = publish_model(tmp_path, "cyclic", cyclic).bytes
    publish_model(tmp_path, "other", trained["iris"][0])
    evicted: list[weakref.ref[Any]] = []
    evicted_alive_at_next_load: list[bool] = []

    def loader(path: Path, fmt: str, **options: Any) -> Any:
        if evicted:
            evicted_alive_at_next_load.append(evicted[0]() is not None)
        return load_model_file(path, fmt, **options)

    registry = registry_for(tmp_path, budget=MemoryBudget(limit=int(1.5 * size), baseline=0), loader=loader)
    evicted.append(weakref.ref(registry.get("cyclic").model))

    assert gc.get_freeze_count() > 0, "after a load, what is alive is frozen"

    registry.get("other")  # evicts the cyclic model to make room

    assert registry.state("cyclic")[0] == "not_loaded"
    assert evicted_alive_at_next_load == [False], "the evicted model, cycle and all, is freed BEFORE the next load"


# -- hot swap and rollback --


def test_a_warm_registry_notices_a_new_version_after_the_refresh_interval_with_one_pointer_read(
    tmp_path: Path, trained: dict[str, Any]
) -> None:
    clock = FakeClock()
    registry = registry_for(tmp_path, refresh_seconds=30, clock=clock)
    store: CountingStore = registry.store  # type: ignore[assignment]
    publish_model(tmp_path, "iris", trained["iris"][0], V1)
    assert registry.get("iris").manifest.version == V1
    publish_model(tmp_path, "iris", trained["iris-pipeline"][0], V2)
    reads = (store.pointer_reads, store.manifest_reads)

    clock.now += 29
    assert registry.get("iris").manifest.version == V1
    assert (store.pointer_reads, store.manifest_reads) == reads  # nothing read inside the interval
    clock.now += 1
    swapped = registry.get("iris")
    clock.now += 1
    registry.get("iris")

    assert swapped.manifest.version == V2 and type(swapped.model).__name__ == "Pipeline"
    assert store.pointer_reads == reads[0] + 1


def test_the_old_version_is_released_before_the_new_one_loads_when_both_do_not_fit(
    tmp_path: Path, trained: dict[str, Any]
) -> None:
    clock = FakeClock()
    v1 = publish_model(tmp_path, "iris", trained["iris"][0], V1)
    held_during_load: list[str | None] = []

    def loader(path: Path, fmt: str, **options: Any) -> Any:
        held_during_load.append(next(m["loaded_version"] for m in registry.list_models()["models"]))
        return load_model_file(path, fmt, **options)

    registry = registry_for(
        tmp_path, clock=clock, loader=loader, budget=MemoryBudget(limit=int(1.5 * v1.bytes), baseline=0)
    )
    registry.get("iris")
    publish_model(tmp_path, "iris", trained["iris"][0], V2)
    clock.now += 30

    assert registry.get("iris").manifest.version == V2
    assert held_during_load == [None, None]  # v1 was gone before v2's first byte was read


def test_the_old_version_keeps_answering_while_the_new_one_loads_when_both_fit(
    tmp_path: Path, trained: dict[str, Any]
) -> None:
    clock = FakeClock()
    publish_model(tmp_path, "iris", trained["iris"][0], V1)
    release = threading.Event()

    def loader(path: Path, fmt: str, **options: Any) -> Any:
        if V2 in str(path):
            release.wait(10)
        return load_model_file(path, fmt, **options)

    registry = registry_for(tmp_path, clock=clock, loader=loader)
    registry.get("iris")
    publish_model(tmp_path, "iris", trained["iris"][0], V2)
    clock.now += 30

    during = [registry.get("iris").manifest.version for _ in range(3)]
    assert registry.state("iris") == ("loading", V2)
    release.set()
    after = registry.get("iris", until_loaded=True).manifest.version

    assert during == [V1, V1, V1] and after == V2


def test_rollback_points_current_at_the_previous_version_or_a_named_one(
    tmp_path: Path, trained: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    for version in (V1, V2, V3):
        publish_model(tmp_path, "iris", trained["iris"][0], version)
    store = ModelStore(tmp_path)

    assert rollback(store, "iris") == (V3, V2)
    assert cli_main(["rollback", "iris", V3, "--models-root", str(tmp_path)]) == 0
    assert f"{V2} -> {V3}" in capsys.readouterr().out
    assert store.current_version("iris") == V3
    rollback(store, "iris", V1)
    with pytest.raises(ModelNotFoundError, match="no version older"):
        rollback(store, "iris")
    with pytest.raises(ModelNotFoundError):
        rollback(store, "iris", "20990101T000000Z-nope")


def test_a_warm_registry_serves_the_rolled_back_version_after_the_refresh(
    tmp_path: Path, trained: dict[str, Any]
) -> None:
    clock = FakeClock()
    publish_model(tmp_path, "iris", trained["iris"][0], V1)
    publish_model(tmp_path, "iris", trained["iris"][0], V2)
    registry = registry_for(tmp_path, clock=clock)
    assert registry.get("iris").manifest.version == V2

    rollback(registry.store, "iris")
    clock.now += 30

    assert registry.get("iris").manifest.version == V1


# -- version safety --


@pytest.mark.parametrize(
    ("details", "names"),
    [
        ({"sklearn_version": "1.5.2", "numpy_major": "2.x"}, ["1.5.2", sklearn.__version__]),
        ({"sklearn_version": sklearn.__version__, "numpy_major": "1.x"}, ["numpy 1.x", np.__version__]),
    ],
)
def test_a_model_saved_under_other_versions_is_refused_naming_both(
    tmp_path: Path, trained: dict[str, Any], details: dict[str, str], names: list[str]
) -> None:
    publish_model(tmp_path, "iris", trained["iris"][0], details=details)

    with pytest.raises(ModelVersionMismatchError) as refused:
        registry_for(tmp_path).get("iris")

    assert refused.value.status == 503
    assert all(name in refused.value.message for name in names)


def test_version_check_warn_loads_anyway_and_matching_versions_load_silently(
    tmp_path: Path, trained: dict[str, Any]
) -> None:
    publish_model(tmp_path, "old", trained["iris"][0], details={"sklearn_version": "1.5.2", "numpy_major": "1.x"})
    current = {"sklearn_version": sklearn.__version__, "numpy_major": f"{np.__version__.split('.')[0]}.x"}
    publish_model(tmp_path, "same", trained["iris"][0], details=current)

    assert registry_for(tmp_path, version_check="warn").get("old").manifest.name == "old"
    assert registry_for(tmp_path).get("same").manifest.name == "same"


def test_a_broken_version_is_not_reread_by_every_request_until_the_refresh_interval(
    tmp_path: Path, trained: dict[str, Any]
) -> None:
    clock = FakeClock()
    manifest = publish_model(tmp_path, "iris", trained["iris"][0], V1)
    path = ModelStore(tmp_path).model_path(manifest)
    path.write_bytes(path.read_bytes()[:100])  # truncated
    attempts: list[Path] = []

    def loader(path: Path, fmt: str, **options: Any) -> Any:
        attempts.append(path)
        return load_model_file(path, fmt, **options)

    registry = registry_for(tmp_path, clock=clock, loader=loader)
    for _ in range(3):
        with pytest.raises(ModelLoadError, match=V1):
            registry.get("iris")
    clock.now += 30
    with pytest.raises(ModelLoadError):
        registry.get("iris")

    assert len(attempts) == 2
