"""The post-load audit on objects: each invariant compiled code relies on, broken once, is refused with the
object's path; legitimate models (DataFrame pipelines included) pass and are prepared to serve (n_jobs=1)."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse
from bigpickle.safety.audit import ModelAuditError, audit_model
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KDTree, KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tests.safety.corpus import _iris


def _copy(model: Any) -> Any:
    return pickle.loads(pickle.dumps(model, protocol=5))


def _frame() -> tuple[pd.DataFrame, np.ndarray]:
    n = 60
    frame = pd.DataFrame(
        {
            "color": pd.Categorical(["red", "green", "blue"] * (n // 3)),
            "size": np.arange(n, dtype=float),
            "weight": np.arange(n) % 7,
        }
    )
    return frame, np.arange(n) % 2


def test_dataframe_pipelines_with_pandas_objects_and_partial_pass_the_audit() -> None:
    X, y = _frame()
    by_names = ColumnTransformer(
        [("c", OneHotEncoder(handle_unknown="ignore"), ["color"]), ("n", StandardScaler(), X.columns[1:3])]
    )
    models = [
        HistGradientBoostingClassifier(categorical_features="from_dtype", max_iter=5).fit(X, y),  # functools.partial
        make_pipeline(by_names, LogisticRegression()).fit(X, y),  # a pandas Index of column names
        make_pipeline(SimpleImputer(missing_values=pd.NA, strategy="most_frequent"), OneHotEncoder()).fit(
            X[["color"]].astype(object)
        ),  # pandas.NA
    ]

    for model in models:
        assert audit_model(_copy(model)) is not None


def test_the_audit_sets_n_jobs_to_one_everywhere() -> None:
    X, y = _iris()
    model = _copy(make_pipeline(StandardScaler(), KNeighborsClassifier(n_jobs=-1)).fit(X, y))

    audit_model(model)

    assert model.steps[1][1].n_jobs == 1


def test_a_forest_tree_with_a_feature_past_n_features_in_is_refused() -> None:
    X, y = _iris()
    forest = _copy(RandomForestClassifier(n_estimators=2, random_state=0).fit(X, y))
    forest.estimators_[1].n_features_in_ = 2  # its tree splits on 4 features

    with pytest.raises(ModelAuditError, match=r"model\.estimators_\[1\]\.tree_: n_features 4 differs"):
        audit_model(forest)


def test_a_boosting_predictor_node_pointing_past_its_nodes_is_refused() -> None:
    X, y = _iris()
    model = _copy(HistGradientBoostingClassifier(max_iter=3).fit(X, y))
    nodes = model._predictors[0][0].nodes
    nodes["left"][0] = len(nodes) + 10

    with pytest.raises(ModelAuditError, match=r"_predictors\[0\]\[0\]\.nodes: a child index is out of range"):
        audit_model(model)


def test_a_neighbour_tree_whose_index_array_is_not_a_permutation_is_refused() -> None:
    data = np.random.default_rng(0).random((30, 3))
    tree = KDTree(data, leaf_size=5)
    state = list(tree.__getstate__())
    state[1] = state[1].copy()
    state[1][0] = 10**6  # a row index past the data
    forged = KDTree.__new__(KDTree)
    forged.__setstate__(tuple(state))

    with pytest.raises(ModelAuditError, match=r"model\['tree'\]\.idx_array: is not a permutation"):
        audit_model({"tree": forged})


def test_a_sparse_matrix_with_an_index_past_its_columns_is_refused() -> None:
    matrix = scipy.sparse.csr_matrix(np.eye(3))
    matrix.indices[0] = 7  # scipy trusts this in its C++ routines

    with pytest.raises(ModelAuditError, match=r"model\['components_'\]: sparse csr matrix"):
        audit_model({"components_": matrix})
