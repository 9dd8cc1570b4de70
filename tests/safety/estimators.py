"""Every estimator scikit-learn's own registry lists, fitted on a small numeric matrix, plus the common
non-default options whose pickles name other globals (every SGD loss, every univariate score function,
the Gaussian-process kernels, pooling functions). The allowlist's coverage is measured on this corpus.

An estimator that needs more than defaults to be built or fitted (a meta-estimator's inner estimator,
a 2-D target, text input) gets the least it needs, listed in `_BUILD` and `_DATA`.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from sklearn import feature_selection
from sklearn.cluster import FeatureAgglomeration
from sklearn.gaussian_process import GaussianProcessClassifier, GaussianProcessRegressor, kernels
from sklearn.linear_model import LogisticRegression, Ridge, SGDClassifier, SGDRegressor
from sklearn.preprocessing import StandardScaler
from sklearn.utils import all_estimators

from tests.safety.corpus import TEXT_LABELS, TEXTS

N_SAMPLES, N_FEATURES = 40, 4

# Estimators refused on purpose: none today. An entry here needs a reason docs/security.md repeats.
REFUSED_ON_PURPOSE: dict[str, str] = {}


def numeric_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((N_SAMPLES, N_FEATURES)) + 0.1, np.arange(N_SAMPLES) % 2


def _inner(cls: type) -> Any:
    return Ridge() if "Regressor" in cls.__name__ else LogisticRegression()


def _pair(cls: type) -> list[tuple[str, Any]]:
    return [("a", _inner(cls)), ("b", _inner(cls))]


# Constructor arguments for estimators that have required ones.
_BUILD: dict[str, Callable[[type], Any]] = {
    **dict.fromkeys(
        (
            "ClassifierChain",
            "FixedThresholdClassifier",
            "FrozenEstimator",
            "MultiOutputClassifier",
            "MultiOutputRegressor",
            "OneVsOneClassifier",
            "OneVsRestClassifier",
            "OutputCodeClassifier",
            "RFE",
            "RFECV",
            "RegressorChain",
            "SelectFromModel",
            "SelfTrainingClassifier",
            "SequentialFeatureSelector",
            "TunedThresholdClassifierCV",
        ),
        lambda cls: cls(_inner(cls)),
    ),
    "GridSearchCV": lambda cls: cls(LogisticRegression(), {"C": [1.0]}, cv=2),
    "RandomizedSearchCV": lambda cls: cls(LogisticRegression(), {"C": [1.0]}, n_iter=1, cv=2),
    **dict.fromkeys(("StackingClassifier", "StackingRegressor"), lambda cls: cls(_pair(cls), cv=2)),
    **dict.fromkeys(("VotingClassifier", "VotingRegressor"), lambda cls: cls(_pair(cls))),
    "Pipeline": lambda cls: cls([("scale", StandardScaler()), ("model", LogisticRegression())]),
    "FeatureUnion": lambda cls: cls([("a", StandardScaler()), ("b", StandardScaler())]),
    "ColumnTransformer": lambda cls: cls([("scale", StandardScaler(), [0, 1])], remainder="passthrough"),
    "SparseCoder": lambda cls: cls(np.eye(N_FEATURES)),
    **dict.fromkeys(("PLSCanonical", "PLSSVD", "CCA"), lambda cls: cls(n_components=1)),
    **dict.fromkeys(("SparseRandomProjection", "GaussianRandomProjection"), lambda cls: cls(n_components=2)),
}

# (X, y or None) for estimators that do not take the numeric matrix with a binary target.
_DICTS = [{"a": float(i % 3), "b": 1.0} for i in range(N_SAMPLES)]
_DATA: dict[str, Callable[[np.ndarray, np.ndarray], tuple[Any, Any]]] = {
    **dict.fromkeys(
        ("CountVectorizer", "TfidfVectorizer", "HashingVectorizer"), lambda X, y: (TEXTS, np.asarray(TEXT_LABELS))
    ),
    **dict.fromkeys(("DictVectorizer",), lambda X, y: (_DICTS, y)),
    "FeatureHasher": lambda X, y: ([{k: v for k, v in d.items()} for d in _DICTS], None),
    "PatchExtractor": lambda X, y: (X.reshape(-1, 2, 2)[:8], None),
    "IsotonicRegression": lambda X, y: (X[:, 0], y.astype(float)),
    "KernelCenterer": lambda X, y: (X @ X.T, None),
    **dict.fromkeys(("LabelBinarizer", "LabelEncoder"), lambda X, y: (y, None)),
    "MultiLabelBinarizer": lambda X, y: ([[1, 2], [3]] * 4, None),
    **dict.fromkeys(
        (
            "MultiTaskElasticNet",
            "MultiTaskElasticNetCV",
            "MultiTaskLasso",
            "MultiTaskLassoCV",
            "MultiOutputClassifier",
            "MultiOutputRegressor",
            "ClassifierChain",
            "RegressorChain",
        ),
        lambda X, y: (X, np.column_stack([y, 1 - y])),
    ),
    "GammaRegressor": lambda X, y: (X, y + 1.0),
    "SelfTrainingClassifier": lambda X, y: (X, np.where(np.arange(len(y)) % 4 == 0, -1, y)),
}


def _fit(model: Any, X: Any, y: Any) -> Any:
    """Fit as scikit-learn's own checks do: supervised when `fit` takes a target, otherwise on X alone."""
    if y is None:
        return model.fit(X)
    try:
        return model.fit(X, y)
    except TypeError:
        return model.fit(X)


def _registry_case(name: str, cls: type) -> Callable[[], tuple[Any, Any]]:
    def make() -> tuple[Any, Any]:
        X, y = numeric_data()
        X, y = _DATA.get(name, lambda X, y: (X, y))(X, y)
        model = _BUILD[name](cls) if name in _BUILD else cls()
        if name == "FrozenEstimator":
            model = cls(_fit(_inner(cls), X, y))
        return _fit(model, X, y), X

    return make


def _option_case(model: Any, features: int = N_FEATURES) -> Callable[[], tuple[Any, Any]]:
    def make() -> tuple[Any, Any]:
        X, y = numeric_data()
        return _fit(model, X[:, :features], y), X[:, :features]

    return make


def _score_functions() -> Iterator[Callable[..., Any]]:
    """The univariate score functions sklearn.feature_selection exports (`f_classif`, `chi2`, ...)."""
    for name in feature_selection.__all__:
        func = getattr(feature_selection, name)
        if inspect.isfunction(func) and {"X", "y"} <= set(inspect.signature(func).parameters) and name != "f_oneway":
            yield func


def _kernels() -> dict[str, Any]:
    """One instance of each concrete kernel class, and the three ways kernels combine."""
    concrete = {
        name: cls()
        for name, cls in vars(kernels).items()
        if inspect.isclass(cls)
        and issubclass(cls, kernels.Kernel)
        and cls.__module__ == kernels.__name__
        and not inspect.isabstract(cls)
        and all(
            p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            for p in list(inspect.signature(cls).parameters.values())
        )
    }
    rbf = kernels.RBF()
    return {**concrete, "Sum": rbf + kernels.WhiteKernel(), "Product": 2.0 * rbf, "Exponentiation": rbf**2}


def option_cases() -> dict[str, Callable[[], tuple[Any, Any]]]:
    cases: dict[str, Callable[[], tuple[Any, Any]]] = {}
    for loss in SGDClassifier.loss_functions:
        cases[f"SGDClassifier(loss={loss})"] = _option_case(SGDClassifier(loss=loss))
    for loss in SGDRegressor.loss_functions:
        cases[f"SGDRegressor(loss={loss})"] = _option_case(SGDRegressor(loss=loss))
    for func in _score_functions():
        selector = feature_selection.SelectKBest(func, k=2)
        cases[f"SelectKBest({func.__name__})"] = _option_case(selector)
    for name, kernel in _kernels().items():
        cases[f"GaussianProcessRegressor({name})"] = _option_case(
            GaussianProcessRegressor(kernel, alpha=0.1, optimizer=None),
            features=1,  # periodic kernels: PD in 1-D
        )
    cases["GaussianProcessClassifier(3 classes)"] = _three_class_gpc
    for pool in (np.mean, np.median, np.max, np.min):
        cases[f"FeatureAgglomeration({pool.__name__})"] = _option_case(FeatureAgglomeration(pooling_func=pool))
    return cases


def _three_class_gpc() -> tuple[Any, Any]:
    X, y = numeric_data()
    return GaussianProcessClassifier().fit(X, np.arange(len(y)) % 3), X


def sweep_cases() -> dict[str, Callable[[], tuple[Any, Any]]]:
    """case name -> () -> (fitted model, inputs): the registry, then the options."""
    return {name: _registry_case(name, cls) for name, cls in all_estimators()} | option_cases()


@functools.cache
def fitted_cases() -> dict[str, tuple[Any, Any]]:
    """Every sweep case fitted once per test session: case name -> (model, inputs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence and small-sample warnings are not the subject here
        return {case: make() for case, make in sweep_cases().items()}
