"""Hostile pickles built only from allowlisted globals: the damage is in the state (tree indices, dtype
layouts, vectorizer parameters, partial targets, sizes), so only the post-load audit, the trial load or
the scanner's "references, not calls" rule can refuse them. Each builder returns the pickle's bytes."""

from __future__ import annotations

import functools
import io
import pickle
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.tree import DecisionTreeClassifier

from tests.safety.corpus import TEXT_LABELS, TEXTS, _global, _iris


class _TreeStatePickler(pickle.Pickler):
    """Pickles sklearn Trees with their node array edited by `edit` (what a hand-made file would hold)."""

    def __init__(self, file: io.BytesIO, edit: Callable[[np.ndarray], None]) -> None:
        super().__init__(file, protocol=5)
        self.edit = edit

    def reducer_override(self, obj: Any) -> Any:
        if type(obj).__name__ == "Tree":
            cls, args, state = obj.__reduce__()
            nodes = state["nodes"].copy()
            self.edit(nodes)
            return cls, args, {**state, "nodes": nodes}
        return NotImplemented


def _edited_tree(edit: Callable[[np.ndarray], None]) -> bytes:
    X, y = _iris()
    buffer = io.BytesIO()
    _TreeStatePickler(buffer, edit).dump(DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y))
    return buffer.getvalue()


def _set(field: str, value: int) -> Callable[[np.ndarray], None]:
    def edit(nodes: np.ndarray) -> None:
        nodes[field][0] = value

    return edit


def tree_child_out_of_range() -> bytes:
    return _edited_tree(_set("left_child", 10**6))


def tree_feature_out_of_range() -> bytes:
    return _edited_tree(_set("feature", 10**6))


def tree_cycle() -> bytes:
    """A child pointing back at the root: predict would loop for ever."""

    def edit(nodes: np.ndarray) -> None:
        nodes["right_child"][nodes["left_child"][0]] = 0
        nodes["left_child"][nodes["left_child"][0]] = 0

    return _edited_tree(edit)


def vectorizer_reading_files() -> bytes:
    model = make_pipeline(CountVectorizer(), LogisticRegression()).fit(TEXTS, TEXT_LABELS)
    model.steps[0][1].input = "filename"  # predict would open whatever path a request sends
    return pickle.dumps(model, protocol=5)


def partial_of_a_reconstructor() -> bytes:
    """A FunctionTransformer whose func is functools.partial(numpy's _frombuffer): a call at predict time."""
    from numpy._core.numeric import _frombuffer

    transformer = FunctionTransformer(functools.partial(_frombuffer, b"\0" * 8)).fit([[1.0]])
    return pickle.dumps(transformer, protocol=5)


def partial_of_a_type() -> bytes:
    """functools.partial(numpy.ndarray, (10**12,)): an allocation waiting for predict."""
    transformer = FunctionTransformer(functools.partial(np.ndarray, (10**12,))).fit([[1.0]])
    return pickle.dumps(transformer, protocol=5)


def ufunc_bomb() -> bytes:
    """numpy.exp(numpy.ndarray((150_000_000,), "f8")): 47 bytes that allocate 1.1 GiB while unpickling."""
    ndarray = _global("numpy", "ndarray", 4) + b"\x4a" + struct.pack("<i", 150_000_000) + b"\x85\x8c\x02f8\x86R"
    return b"\x80\x04" + _global("numpy", "exp", 4) + ndarray + b"\x85R."


def set_of_a_huge_range() -> bytes:
    """set(range(10**12)): runs until killed."""
    huge = pickle.dumps(10**12, protocol=4)[2:-1]
    inner = _global("builtins", "range", 4) + huge + b"\x85R"
    return b"\x80\x04" + _global("builtins", "set", 4) + inner + b"\x85R."


def ufunc_with_out() -> bytes:
    """numpy.absolute(src, out): an allowlisted ufunc called while unpickling, writing into `out`."""
    src, out = np.ones(4), np.zeros(4)
    return b"\x80\x04" + _global("numpy", "absolute", 4) + pickle.dumps((src, out), protocol=4)[2:-1] + b"R."


def _respelled(obj: Any, old: bytes, new: bytes) -> bytes:
    data = pickle.dumps(obj, protocol=5)
    assert data.count(old) == 1
    return data.replace(old, new)


def datetime_dtype_with_an_integer_state() -> bytes:
    """numpy.dtype("M8") given an int64's __setstate__ (no datetime metadata): numpy crashes building it."""
    return _respelled(np.arange(3), b"\x8c\x02i8", b"\x8c\x02M8")


def object_scalar_from_raw_bytes() -> bytes:
    """numpy's scalar(dtype("O8"), 8 bytes): the bytes become an object pointer."""
    return _respelled(np.float64(1.5), b"\x8c\x02f8", b"\x8c\x02O8")


# name -> (builder, refused today by the audit or trial load; False: only by zerocopy's scanner rules)
HOSTILE_STATE: dict[str, tuple[Callable[[], bytes], bool]] = {
    "tree child index out of range": (tree_child_out_of_range, True),
    "tree feature index out of range": (tree_feature_out_of_range, True),
    "tree with a cycle": (tree_cycle, True),
    "CountVectorizer(input='filename')": (vectorizer_reading_files, True),
    "functools.partial of a reconstructor": (partial_of_a_reconstructor, True),
    "functools.partial of numpy.ndarray": (partial_of_a_type, True),
    "numpy.exp(numpy.ndarray(150M)) allocation bomb": (ufunc_bomb, False),
    "set(range(10**12))": (set_of_a_huge_range, False),
    "numpy.absolute(src, out) called at load": (ufunc_with_out, False),
    "datetime dtype with an integer's state": (datetime_dtype_with_an_integer_state, False),
    "object scalar from raw bytes": (object_scalar_from_raw_bytes, False),
}


def forged_dtype_view() -> np.ndarray:
    """An 8-byte buffer seen through a dtype that claims a 1000-float sub-array (what a forged dtype state
    builds at load): its elements lie past the buffer."""
    forged = np.dtype("V8")
    forged.__setstate__((3, "|", (np.dtype("f8"), (1000,)), None, None, 8, 1, 0))
    return np.frombuffer(b"\0" * 8, dtype=forged)
