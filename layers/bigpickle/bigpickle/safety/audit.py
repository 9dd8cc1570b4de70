"""The post-load audit: walk a loaded model's object graph and check what compiled code relies on but does
not check, before the model serves a request.

The allowlist decides which classes a pickle may build; it cannot see their state. A tree whose child index
points past its node array, a dtype whose element size contradicts its layout, a vectorizer told to open
files: each is built from allowlisted parts, and each crashes the process or reads what it should not at
predict time. The audit refuses them with the object's path and the broken invariant:

    invariant                     checked on
    memory-safe arrays            every ndarray: dtype rebuilt by numpy matches (size, layout, flags); the
                                  buffer covers shape, strides and offset
    tree nodes                    sklearn Tree: children in range and below their parent (or both leaf),
                                  one parent per node, features < n_features, value shape
    boosting predictors           HistGradientBoosting TreePredictor nodes: children, feature_idx,
                                  categorical bitset indexes; known categories < 256
    feature subsets               bagging / isolation forest `estimators_features_` < n_features_in_
    neighbour trees               KDTree / BallTree: index array a permutation of the data's rows, node ranges
                                  inside it, bounds shaped by the nodes
    sparse matrices               indices / indptr in range (scipy's full format check)
    no I/O, no code               vectorizers read only `input="content"`; every function the model keeps is
                                  one the allowlist lists as reference-only (REFERENCE_ONLY_FUNCTIONS), also
                                  inside functools.partial; FunctionTransformer kwargs carry no `out=`
    serving                       `n_jobs` becomes 1 everywhere (no worker pools in a Lambda)
"""

from __future__ import annotations

import functools
import importlib
import types
from collections.abc import Iterator
from typing import Any

import numpy as np

from bigpickle.errors import UnsafePickleError
from bigpickle.safety.allowlist import RECONSTRUCTORS, Allowlist, canonical

TREE_LEAF = -1  # sklearn.tree._tree.TREE_LEAF
MAX_CATEGORY = 255  # HistGradientBoosting categories are bin indexes; its bitsets hold 256 bits
# plain and builtin functions, ufuncs, and numpy's array-function dispatchers (np.mean, np.median, ...)
FUNCTION_TYPES = (types.FunctionType, types.BuiltinFunctionType, np.ufunc, type(np.mean))


class ModelAuditError(UnsafePickleError):
    """A loaded model breaks an invariant compiled code relies on; the reasons name the object and invariant."""


class _Refusal(Exception):
    pass


def audit_model(model: Any, allowlist: Allowlist | None = None) -> Any:
    """Check `model`'s whole object graph and set `n_jobs` to 1 everywhere; the model, or ModelAuditError."""
    reasons: list[str] = []
    for path, obj in _walk(model):
        try:
            _check(path, obj, allowlist or Allowlist())
        except _Refusal as refusal:
            reasons.append(str(refusal))
    if reasons:
        raise ModelAuditError(reasons)
    return model


# -- the walk --

_ATOMS = (str, bytes, int, float, bool, complex, type(None), np.generic, np.dtype, range, slice)


def _walk(root: Any) -> Iterator[tuple[str, Any]]:
    """(path, object) for every object reachable from `root`, each once, depth first."""
    stack: list[tuple[str, Any]] = [("model", root)]
    seen: set[int] = set()
    while stack:
        path, obj = stack.pop()
        if isinstance(obj, _ATOMS) or id(obj) in seen:
            continue
        seen.add(id(obj))
        yield path, obj
        stack.extend(_children(path, obj))


def _children(path: str, obj: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield f"{path}[{key!r}]", value
            if not isinstance(key, _ATOMS):
                yield f"{path}.keys()", key
    elif isinstance(obj, list | tuple | set | frozenset):
        for i, value in enumerate(obj):
            yield f"{path}[{i}]", value
    elif isinstance(obj, np.ndarray):
        if obj.dtype.hasobject and obj.dtype.kind == "O":
            for i, value in enumerate(obj.ravel(order="K")):
                yield f"{path}.flat[{i}]", value
    elif isinstance(obj, functools.partial):
        yield f"{path}.func", obj.func
        yield f"{path}.args", obj.args
        yield f"{path}.keywords", obj.keywords
    elif not isinstance(obj, (type, *FUNCTION_TYPES)) and hasattr(obj, "__dict__"):
        for name, value in vars(obj).items():
            yield f"{path}.{name}", value


# -- the checks --


def _check(path: str, obj: Any, allowlist: Allowlist) -> None:
    if isinstance(obj, np.ndarray):
        _check_array(path, obj)
    elif isinstance(obj, FUNCTION_TYPES):
        _check_function(path, obj, allowlist)
    elif isinstance(obj, functools.partial):
        pair = _global_name(obj.func)
        if pair is None or not allowlist.may_wrap(*pair):
            _refuse(f"{path}.func", f"functools.partial wraps {obj.func!r}, not a reference-only function")
    else:
        kind = type(obj)
        checker = _BY_CLASS_NAME.get((kind.__module__.split(".")[0], kind.__name__))
        if checker is not None:
            checker(path, obj)
        _check_attributes(path, obj)


def _refuse(path: str, invariant: str) -> None:
    raise _Refusal(f"{path}: {invariant}")


def _global_name(obj: Any) -> tuple[str, str] | None:
    """The (module, name) a pickle names `obj` by, if importing it gives `obj` back."""
    name = getattr(obj, "__name__", None)
    module = "numpy" if isinstance(obj, np.ufunc) else getattr(obj, "__module__", None)
    if not isinstance(name, str) or not isinstance(module, str):
        return None
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return canonical(module, name) if found is obj else None


def _check_function(path: str, func: Any, allowlist: Allowlist) -> None:
    """A function the pickle named (an allowlisted global) must be one a model may keep: a reconstructor
    kept as an attribute would be called at predict time. Functions outside the allowlist cannot come from
    the pickle (the unpickler refuses them): scikit-learn's own __setstate__ made them. PICKLE_ALLOWLIST_EXTRA
    functions are the operator's to vouch for."""
    pair = _global_name(func)
    if pair is not None and pair in RECONSTRUCTORS and pair not in allowlist.extra:
        _refuse(path, f"keeps {'.'.join(pair)}, a reconstructor, as a function it calls")


# -- arrays --


def _canonical_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype numpy itself builds from `dtype`'s description; raises if no such dtype exists."""
    if dtype.fields is not None:
        names = list(dtype.names or ())
        specs = [dtype.fields[name] for name in names]
        return np.dtype(
            {
                "names": names,
                "formats": [_canonical_dtype(spec[0]) for spec in specs],
                "offsets": [spec[1] for spec in specs],
                "itemsize": dtype.itemsize,
            },
            align=dtype.isalignedstruct,
        )
    if dtype.subdtype is not None:
        base, shape = dtype.subdtype
        return np.dtype((_canonical_dtype(base), shape))
    return np.dtype(dtype.str)


def _check_dtype(path: str, dtype: np.dtype) -> None:
    try:
        canonical_dtype = _canonical_dtype(dtype)
    except (TypeError, ValueError) as exc:
        _refuse(path, f"dtype {dtype!r} is not one numpy can build ({exc})")
    if (canonical_dtype.itemsize, canonical_dtype.flags, canonical_dtype.alignment) != (
        dtype.itemsize,
        dtype.flags,
        dtype.alignment,
    ) or canonical_dtype != dtype:
        _refuse(
            path,
            f"dtype {dtype!r} claims element size {dtype.itemsize} (flags {dtype.flags}); numpy builds it with "
            f"{canonical_dtype.itemsize} (flags {canonical_dtype.flags})",
        )
    if dtype.hasobject and dtype.kind != "O":
        _refuse(path, f"dtype {dtype!r} holds objects inside a structured or sub-array layout")


def _address(array: np.ndarray) -> int:
    """The address of the array's first element (`.ctypes.data` builds a ctypes helper: slower on a cold start)."""
    return array.__array_interface__["data"][0]


def _address_range(array: np.ndarray) -> tuple[int, int]:
    """[first, last) byte addresses the array's shape, strides and offset reach."""
    start = end = _address(array)
    for size, stride in zip(array.shape, array.strides, strict=True):
        if stride < 0:
            start += (size - 1) * stride
        else:
            end += (size - 1) * stride
    return start, end + array.itemsize


def _buffer_range(owner: Any) -> tuple[int, int] | None:
    """[first, last) addresses of the memory `owner` provides, or None when it cannot be told."""
    if isinstance(owner, np.ndarray):
        return _address(owner), _address(owner) + owner.nbytes
    try:
        view = memoryview(owner)
    except TypeError:
        return None
    if not view.contiguous:
        return None
    raw = np.frombuffer(view.cast("B") if view.format != "B" or view.ndim != 1 else view, dtype=np.uint8)
    return _address(raw), _address(raw) + raw.nbytes


def _check_array(path: str, array: np.ndarray) -> None:
    _check_dtype(path, array.dtype)
    if array.size == 0:
        return
    owner: Any = array
    while isinstance(owner, np.ndarray) and owner.base is not None:
        owner = owner.base
    memory = _buffer_range(owner)
    if memory is None:
        return  # memory owned by an extension object (a Cython memoryview): numpy built the view itself
    start, end = _address_range(array)
    if start < memory[0] or end > memory[1]:
        _refuse(
            path,
            f"array of shape {array.shape} and strides {array.strides} reaches bytes [{start - memory[0]}, "
            f"{end - memory[0]}) of a {memory[1] - memory[0]}-byte buffer",
        )


# -- estimator parameters --

_CODE_PARAMETERS = ("analyzer", "tokenizer", "preprocessor", "metric", "func", "inverse_func", "kernel")


def _check_attributes(path: str, obj: Any) -> None:
    attributes = getattr(obj, "__dict__", None)
    if not isinstance(attributes, dict):
        return
    if "n_jobs" in attributes:
        obj.n_jobs = 1  # serving never starts worker pools
    if "input" in attributes and _is_vectorizer(obj) and attributes["input"] != "content":
        _refuse(f"{path}.input", f"a vectorizer may only take content, not {attributes['input']!r} (it opens files)")
    for name in _CODE_PARAMETERS:
        value = attributes.get(name)
        if isinstance(value, type):
            _refuse(f"{path}.{name}", f"is the class {value.__name__}; only strings or listed functions")
    for name in ("kw_args", "inv_kw_args"):
        value = attributes.get(name)
        if isinstance(value, dict) and "out" in value:
            _refuse(f"{path}.{name}", "passes out= (writes into an array the model holds)")


def _is_vectorizer(obj: Any) -> bool:
    return any(
        cls.__name__ == "_VectorizerMixin" and cls.__module__ == "sklearn.feature_extraction.text"
        for cls in type(obj).__mro__
    )


# -- compiled structures --


def _check_tree(path: str, tree: Any) -> None:
    n = int(tree.node_count)
    left, right = np.asarray(tree.children_left), np.asarray(tree.children_right)
    feature = np.asarray(tree.feature)
    leaf = left == TREE_LEAF
    if not np.array_equal(leaf, right == TREE_LEAF):
        _refuse(path, "a node has exactly one child")
    internal = ~leaf
    parents, lefts, rights = np.arange(n)[internal], left[internal], right[internal]
    if ((lefts <= parents) | (lefts >= n) | (rights <= parents) | (rights >= n)).any():
        _refuse(path, f"a child index is out of range or not after its parent ({n} nodes)")
    if n:
        parent_count = np.bincount(np.concatenate([lefts, rights]).astype(np.intp), minlength=n)
        if parent_count[0] or (parent_count[1:] != 1).any():
            _refuse(path, "a node has no parent or several: the nodes are not a tree")
    features = feature[internal]
    if ((features < 0) | (features >= tree.n_features)).any():
        _refuse(path, f"a split feature is outside [0, {tree.n_features})")
    n_classes = np.asarray(tree.n_classes)
    if n_classes.shape != (tree.n_outputs,) or (n_classes > tree.max_n_classes).any():
        _refuse(path, "n_classes does not match n_outputs and max_n_classes")
    if np.asarray(tree.value).shape != (n, tree.n_outputs, tree.max_n_classes):
        _refuse(path, "value array shape does not match the nodes, outputs and classes")


def _check_predictor(path: str, predictor: Any, n_features: int | None) -> None:
    nodes = predictor.nodes
    from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE

    if nodes.dtype != PREDICTOR_RECORD_DTYPE or nodes.ndim != 1:
        _refuse(f"{path}.nodes", f"dtype {nodes.dtype} is not the predictor record")
    n = len(nodes)
    internal = nodes["is_leaf"] == 0
    index = np.arange(n)[internal]
    lefts, rights = nodes["left"][internal].astype(np.int64), nodes["right"][internal].astype(np.int64)
    if ((lefts <= index) | (lefts >= n) | (rights <= index) | (rights >= n)).any():
        _refuse(f"{path}.nodes", f"a child index is out of range or not after its parent ({n} nodes)")
    features = nodes["feature_idx"][internal]
    if (features < 0).any() or (n_features is not None and (features >= n_features).any()):
        _refuse(f"{path}.nodes", f"a split feature is outside [0, {n_features})")
    bitsets = predictor.raw_left_cat_bitsets
    categorical = internal & (nodes["is_categorical"] != 0)
    for name in ("raw_left_cat_bitsets", "binned_left_cat_bitsets"):
        table = getattr(predictor, name)
        if table.ndim != 2 or table.shape[1] != 8 or table.dtype != np.uint32:
            _refuse(f"{path}.{name}", f"shape {table.shape} {table.dtype} is not (n, 8) uint32")
        if (nodes["bitset_idx"][categorical] >= len(table)).any():
            _refuse(f"{path}.nodes", f"a categorical split points past {name} ({len(bitsets)} rows)")


def _check_hist_boosting(path: str, model: Any) -> None:
    n_features = getattr(model, "n_features_in_", None)
    for i, iteration in enumerate(getattr(model, "_predictors", None) or []):
        for k, predictor in enumerate(iteration):
            _check_predictor(f"{path}._predictors[{i}][{k}]", predictor, n_features)
    binner = getattr(model, "_bin_mapper", None)
    for i, categories in enumerate(getattr(binner, "known_categories", None) or []):
        if (
            categories is not None
            and len(categories)
            and not (0 <= np.min(categories) <= np.max(categories) <= MAX_CATEGORY)
        ):
            _refuse(f"{path}._bin_mapper.known_categories[{i}]", f"a category is outside [0, {MAX_CATEGORY}]")


def _check_feature_subsets(path: str, model: Any) -> None:
    n_features = getattr(model, "n_features_in_", None)
    subsets = getattr(model, "estimators_features_", None)
    if n_features is None or subsets is None:
        return
    for i, features in enumerate(subsets):
        features = np.asarray(features)
        if features.size and (features.min() < 0 or features.max() >= n_features):
            _refuse(f"{path}.estimators_features_[{i}]", f"a feature index is outside [0, {n_features})")


def _check_tree_estimator(path: str, model: Any) -> None:
    tree, n_features = getattr(model, "tree_", None), getattr(model, "n_features_in_", None)
    if tree is not None and n_features is not None and tree.n_features != n_features:
        _refuse(f"{path}.tree_", f"n_features {tree.n_features} differs from the estimator's {n_features}")
    _check_feature_subsets(path, model)


def _check_binary_tree(path: str, tree: Any) -> None:
    data, idx_array, node_data, node_bounds, _leaf, n_levels, n_nodes, *_rest = tree.__getstate__()
    for name, array in (("data", data), ("idx_array", idx_array), ("node_data", node_data), ("bounds", node_bounds)):
        _check_array(f"{path}.{name}", array)
    n = len(data)
    if data.ndim != 2 or idx_array.shape != (n,) or not np.array_equal(np.sort(idx_array), np.arange(n)):
        _refuse(f"{path}.idx_array", f"is not a permutation of the {n} data rows")
    if n_nodes != len(node_data) or n_nodes != 2**n_levels - 1:
        _refuse(f"{path}.node_data", f"{len(node_data)} nodes for {n_levels} levels ({n_nodes} declared)")
    starts, ends = node_data["idx_start"], node_data["idx_end"]
    if ((starts < 0) | (starts > ends) | (ends > n)).any():
        _refuse(f"{path}.node_data", f"a node's index range is outside [0, {n}]")
    if node_bounds.shape[1:] != (n_nodes, data.shape[1]):
        _refuse(f"{path}.node_bounds", f"shape {node_bounds.shape} does not match {n_nodes} nodes")


def _check_sparse(path: str, matrix: Any) -> None:
    try:
        if hasattr(matrix, "check_format"):
            matrix.check_format(full_check=True)
        elif matrix.format == "coo":
            rows, cols = matrix.shape
            if len(matrix.row) != matrix.nnz or len(matrix.col) != matrix.nnz:
                raise ValueError("row, col and data lengths differ")
            if matrix.nnz and (
                matrix.row.min() < 0 or matrix.row.max() >= rows or matrix.col.min() < 0 or matrix.col.max() >= cols
            ):
                raise ValueError("an index is outside the shape")
    except (ValueError, TypeError, AttributeError) as exc:
        _refuse(path, f"sparse {matrix.format} matrix: {exc}")


_BY_CLASS_NAME = {
    ("sklearn", "Tree"): _check_tree,
    **{
        ("sklearn", name): _check_binary_tree
        for name in ("KDTree", "BallTree", "KDTree64", "BallTree64", "KDTree32", "BallTree32")
    },
    **{
        ("sklearn", name): _check_hist_boosting
        for name in ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor")
    },
    **{
        ("sklearn", name): _check_tree_estimator
        for name in (
            "DecisionTreeClassifier",
            "DecisionTreeRegressor",
            "ExtraTreeClassifier",
            "ExtraTreeRegressor",
            "IsolationForest",
            "BaggingClassifier",
            "BaggingRegressor",
        )
    },
    **{
        ("scipy", f"{kind}_{form}"): _check_sparse
        for kind in ("csr", "csc", "coo", "bsr")
        for form in ("matrix", "array")
    },
}
