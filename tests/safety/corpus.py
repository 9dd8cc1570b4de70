"""The two corpora the security specs run on: real scikit-learn models, and hostile pickles that try to
create a marker file by every route a pickle offers."""

from __future__ import annotations

import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.ensemble import (
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    IsolationForest,
    RandomForestClassifier,
)
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC

TEXTS = ["a cat sat", "a dog ran", "the cat slept", "my dog barked", "cats and dogs", "the dog sat"] * 4
TEXT_LABELS = [0, 1, 0, 1, 0, 1] * 4


def _iris() -> tuple[np.ndarray, np.ndarray]:
    return load_iris(return_X_y=True)


def _mixed_columns() -> tuple[np.ndarray, np.ndarray]:
    """A categorical column next to numeric ones, as an object array a ColumnTransformer indexes by position."""
    X, y = _iris()
    colors = np.array(["red", "green", "blue"], dtype=object)[np.arange(len(y)) % 3]
    return np.column_stack([colors, X[:, 0], X[:, 1]]), y


def _column_transformer() -> tuple[Any, Any]:
    X, y = _mixed_columns()
    encode = ColumnTransformer(
        [("onehot", OneHotEncoder(handle_unknown="ignore"), [0]), ("scale", StandardScaler(), [1, 2])]
    )
    return Pipeline([("encode", encode), ("classify", LogisticRegression(max_iter=300))]).fit(X, y), X


def _fit(model: Any, data: Callable[[], tuple[Any, Any]] = _iris, supervised: bool = True) -> Callable[[], Any]:
    def make() -> tuple[Any, Any]:
        X, y = data()
        return (model.fit(X, y) if supervised else model.fit(X)), X

    return make


def _text() -> tuple[Any, Any]:
    model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(TEXTS, TEXT_LABELS)
    return model, TEXTS


# name -> () -> (fitted model, inputs to predict on). Small data: every model fits in well under a second.
LEGIT_MODELS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "pipeline-scaler-logreg": _fit(make_pipeline(StandardScaler(), LogisticRegression(max_iter=300))),
    "column-transformer-onehot": _column_transformer,
    "hist-gradient-boosting": _fit(HistGradientBoostingClassifier(max_iter=15, random_state=0)),
    "gradient-boosting": _fit(GradientBoostingClassifier(n_estimators=10, random_state=0)),
    "random-forest": _fit(RandomForestClassifier(n_estimators=8, random_state=0)),
    "extra-trees-regressor": _fit(ExtraTreesRegressor(n_estimators=8, random_state=0)),
    "k-neighbors": _fit(KNeighborsClassifier(n_neighbors=3)),
    "svc": _fit(SVC(gamma="scale")),
    "mlp": _fit(MLPClassifier(hidden_layer_sizes=(8,), max_iter=300, random_state=0)),
    "isolation-forest": _fit(IsolationForest(n_estimators=10, random_state=0), supervised=False),
    "k-means": _fit(KMeans(n_clusters=3, n_init=2, random_state=0), supervised=False),
    "tfidf-text-pipeline": _text,
    "ridge": _fit(Ridge(alpha=0.5)),
}


# -- hostile pickles: hand-assembled opcode streams, so no attacker code has to be importable here --


def _text_op(s: str) -> bytes:
    data = s.encode()
    return b"\x8c" + bytes([len(data)]) + data if len(data) < 256 else b"X" + struct.pack("<I", len(data)) + data


def _global(module: str, name: str, proto: int) -> bytes:
    if proto >= 4:
        return _text_op(module) + _text_op(name) + b"\x93"  # STACK_GLOBAL
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"  # GLOBAL


def _args(*args: Any) -> bytes:
    """The argument tuple, pickled without PROTO/STOP (protocol 3: bytes stay BINBYTES)."""
    return pickle.dumps(args, protocol=3)[2:-1]


def call(module: str, name: str, *args: Any, proto: int = 4) -> bytes:
    """A pickle that, loaded, calls module.name(*args)."""
    return b"\x80" + bytes([proto]) + _global(module, name, proto) + _args(*args) + b"R."


def hostile_pickles(marker: Path) -> dict[str, bytes]:
    """name -> a pickle that creates `marker` (or would run code) if anything in it were executed."""
    touch = f"touch {marker}"
    py = f"open({str(marker)!r}, 'w').close()"
    corpus = {
        "os.system": call("os", "system", touch),
        "os.system protocol 2": call("os", "system", touch, proto=2),
        "posix.system": call("posix", "system", touch),
        "nt.system": call("nt", "system", touch),
        "os.popen": call("os", "popen", touch),
        "subprocess.Popen": call("subprocess", "Popen", ["sh", "-c", touch]),
        "subprocess.check_output": call("subprocess", "check_output", ["touch", str(marker)]),
        "builtins.eval": call("builtins", "eval", py),
        "builtins.exec": call("builtins", "exec", py),
        "__builtin__.eval (python 2 spelling)": call("__builtin__", "eval", py, proto=2),
        "builtins.compile": call("builtins", "compile", py, "x", "exec"),
        "builtins.open": call("builtins", "open", str(marker), "w"),
        "builtins.__import__": call("builtins", "__import__", "os"),
        "builtins.getattr": call("builtins", "getattr", 1, "real"),
        "nested pickle.loads": call("pickle", "loads", call("os", "system", touch)),
        "nested _pickle.loads": call("_pickle", "loads", call("os", "system", touch)),
        "operator.attrgetter": call("operator", "attrgetter", "system"),
        "operator.methodcaller": call("operator", "methodcaller", "system", touch),
        "numpy.save": call("numpy", "save", str(marker), 1),
        "numpy.load": call("numpy", "load", str(marker), None, True),
        "numpy.fromfile": call("numpy", "fromfile", str(marker)),
        "numpy.savetxt": call("numpy", "savetxt", str(marker), [1.0]),
        "numpy.testing runstring": call("numpy.testing._private.utils", "runstring", py, {}),
        "numpy.f2py compile helper": call("numpy.f2py", "run_main", ["-c", str(marker)]),
        "numpy._core.multiarray.fromfile": call("numpy._core.multiarray", "fromfile", str(marker)),
        "scipy.io.savemat": call("scipy.io", "savemat", str(marker), {}),
        "joblib.load": call("joblib", "load", str(marker)),
        "joblib.dump": call("joblib", "dump", 1, str(marker)),
        "sklearn dump_svmlight_file": call("sklearn.datasets", "dump_svmlight_file", [[1.0]], [1], str(marker)),
        "sklearn.utils._testing (imports and execs)": call(
            "sklearn.utils._testing", "assert_run_python_script_without_output", py
        ),
        "sklearn.externals array_api_compat import": call("sklearn.utils._array_api", "get_namespace", 1),
        # pandas: readers, eval and query run code or read files; only indexes and dtypes are allowlisted
        "pandas.read_pickle": call("pandas", "read_pickle", str(marker)),
        "pandas.io.pickle.read_pickle (pandas 2 path)": call("pandas.io.pickle", "read_pickle", str(marker)),
        "pandas.eval": call("pandas", "eval", py),
        "pandas.DataFrame.query (dotted name)": call("pandas", "DataFrame.query", py),
        "pandas.read_csv": call("pandas", "read_csv", str(marker)),
        "pandas.core.computation.eval.eval": call("pandas.core.computation.eval", "eval", py),
        "pandas.Series (data, not an index or dtype)": call("pandas", "Series", [1.0]),
        # functools.partial is allowlisted; what it wraps is checked like any global
        "functools.partial(os.system)": b"\x80\x04"
        + _global("functools", "partial", 4)
        + b"("  # MARK: partial's arguments (os.system, touch)
        + _global("os", "system", 4)
        + _text_op(touch)
        + b"tR.",
    }
    corpus.update(_protocol_tricks(touch))
    return corpus


def _protocol_tricks(touch: str) -> dict[str, bytes]:
    header = b"\x80\x04"
    return {
        # the module name is written to the memo as an allowed one, then overwritten with "os"
        "memo slot overwritten before STACK_GLOBAL": header
        + _text_op("numpy")
        + b"\x94"  # MEMOIZE -> slot 0 = "numpy"
        + b"0"  # POP
        + _text_op("os")
        + b"q\x00"  # BINPUT 0 -> slot 0 = "os"
        + b"0h\x00"  # POP, BINGET 0
        + _text_op("system")
        + b"\x93"
        + _args(touch)
        + b"R.",
        # STACK_GLOBAL whose name is the result of a call, not a literal string
        "STACK_GLOBAL with a computed name": header
        + _text_op("os")
        + _global("_codecs", "encode", 4)
        + _args("system", "ascii")
        + b"R\x93"
        + _args(touch)
        + b"R.",
        # calling what a call returned (an allowed constructor's result used as a callable)
        "REDUCE on the result of a call": header + _global("builtins", "object", 4) + b")R" + _args(touch) + b"R.",
        # BUILD on an allowed function sets attributes on it for the whole process
        "BUILD on an allowed global": header
        + _global("numpy._core.numeric", "_frombuffer", 4)
        + b"N}"
        + _text_op("__defaults__")
        + _args(touch)
        + b"s\x86b.",  # (None, {...}) slot state
        # INST with a forbidden class, protocol 0 style inside a protocol 2 stream
        "INST os.system": b"\x80\x02("
        + _text_op("x")[:0]
        + b"X"
        + struct.pack("<I", len(touch))
        + touch.encode()
        + b"ios\nsystem\n.",
        "persistent id": header + _text_op("model") + b"Q.",
        "copyreg extension code": header + b"\x82\x01.",
        "joblib placeholder inside a plain pickle": call("joblib.numpy_pickle", "NumpyArrayWrapper"),
        "second pickle after STOP": pickle.dumps(1, protocol=4) + call("os", "system", touch),
    }
