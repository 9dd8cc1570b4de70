"""Real scikit-learn models trained on datasets that ship with scikit-learn (no downloads)."""

from __future__ import annotations

from typing import Any

from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler


def iris_forest(n_estimators: int = 50) -> tuple[Any, Any]:
    """A RandomForestClassifier fitted on named columns (so rows may be sent keyed by feature name)."""
    data = load_iris(as_frame=True)
    model = RandomForestClassifier(n_estimators=n_estimators, random_state=0).fit(data.data, data.target)
    return model, data.data.to_numpy()


def iris_pipeline() -> tuple[Any, Any]:
    """StandardScaler -> LogisticRegression, fitted on a plain array."""
    X, y = load_iris(return_X_y=True)
    model = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression(max_iter=500))]).fit(X, y)
    return model, X


def diabetes_regressor(n_estimators: int = 20) -> tuple[Any, Any]:
    X, y = load_diabetes(return_X_y=True)
    return RandomForestRegressor(n_estimators=n_estimators, random_state=0).fit(X, y), X
