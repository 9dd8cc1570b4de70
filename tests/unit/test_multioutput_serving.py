"""Multi-output models and unusual prediction types through the real predict handler: predictions come back
as nested lists equal to the in-process model's, classes per output in the metadata, probabilities one
[row][class] list per output, and an output with no JSON form is a clear JSON error, never a failed invocation."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bigpickle.local.context import LocalLambdaContext
from bigpickle.local.events import load_event
from bigpickle.local.runtime import Handler, predict_handler
from bigpickle.serving.app import jsonable
from scipy import sparse
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.multioutput import ClassifierChain, MultiOutputClassifier, MultiOutputRegressor, RegressorChain

from tests.helpers import publish_model

ROWS = 7


def _data() -> tuple[Any, Any]:
    """Iris features and three binary targets (a multilabel problem)."""
    X, y = load_iris(return_X_y=True)
    return X, np.column_stack([y > 0, y == 2, X[:, 0] > 5.8]).astype(int)


def _fit(model: Any, labels: Callable[[Any], Any] = lambda Y: Y) -> tuple[Any, Any]:
    X, Y = _data()
    return model.fit(X, labels(Y)), X


MULTI_OUTPUT: dict[str, Callable[[], tuple[Any, Any]]] = {
    "MultiOutputClassifier": lambda: _fit(MultiOutputClassifier(LogisticRegression(max_iter=500))),
    "MultiOutputClassifier with string labels": lambda: _fit(
        MultiOutputClassifier(LogisticRegression(max_iter=500)), lambda Y: np.where(Y == 1, "yes", "no")
    ),
    "ClassifierChain": lambda: _fit(ClassifierChain(LogisticRegression(max_iter=500), random_state=0)),
    "MultiOutputRegressor": lambda: _fit(MultiOutputRegressor(Ridge())),
    "RegressorChain": lambda: _fit(RegressorChain(Ridge())),
}


def request(handler: Handler, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    event = copy.deepcopy(load_event("predict-single"))
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["body"], event["isBase64Encoded"] = (None if body is None else json.dumps(body)), False
    response = handler(event, LocalLambdaContext())
    return response["statusCode"], json.loads(response["body"])


def serve(root: Path, name: str, model: Any) -> Handler:
    publish_model(root, name, model)
    return predict_handler()


@pytest.mark.parametrize("case", sorted(MULTI_OUTPUT))
def test_a_multi_output_model_answers_one_list_per_row_with_one_value_per_output(case: str, lambda_env: Path) -> None:
    # given a multi-output model served by the predict handler
    model, X = MULTI_OUTPUT[case]()
    handler = serve(lambda_env, "multi", model)

    # when it is asked for its metadata and to predict
    metadata_status, metadata = request(handler, "GET", "/v1/models/multi")
    status, answer = request(handler, "POST", "/v1/models/multi:predict", {"instances": X[:ROWS].tolist()})

    # then the predictions are (rows, outputs) nested lists equal to the in-process model's
    assert (metadata_status, status) == (200, 200), (metadata, answer)
    assert answer["predictions"] == model.predict(X[:ROWS]).tolist()
    assert np.shape(answer["predictions"]) == (ROWS, 3)
    # and the metadata names the classes of each output (none for a regressor)
    expected_classes = [labels.tolist() for labels in model.classes_] if hasattr(model, "classes_") else None
    assert metadata["classes"] == expected_classes


def test_a_multi_output_classifier_answers_probabilities_per_output_with_their_classes(lambda_env: Path) -> None:
    # given a MultiOutputClassifier, whose predict_proba is a list of (rows, classes) arrays
    model, X = MULTI_OUTPUT["MultiOutputClassifier with string labels"]()
    handler = serve(lambda_env, "multi", model)

    # when probabilities are asked for
    status, answer = request(
        handler, "POST", "/v1/models/multi:predict", {"instances": X[:ROWS].tolist(), "probabilities": True}
    )

    # then they are one [row][class] list per output, equal to the model's, with each output's classes
    assert status == 200, answer
    assert answer["probabilities"] == [output.tolist() for output in model.predict_proba(X[:ROWS])]
    assert answer["classes"] == [["no", "yes"]] * 3


def test_a_classifier_chain_answers_its_positive_class_probabilities_in_the_same_per_output_shape(
    lambda_env: Path,
) -> None:
    # given a ClassifierChain, whose predict_proba is a (rows, outputs) array of positive-class probabilities
    model, X = MULTI_OUTPUT["ClassifierChain"]()
    handler = serve(lambda_env, "chain", model)

    # when probabilities are asked for
    status, answer = request(
        handler, "POST", "/v1/models/chain:predict", {"instances": X[:ROWS].tolist(), "probabilities": True}
    )

    # then each output has [P(class 0), P(class 1)] per row, its second column being the model's answer
    assert status == 200, answer
    served = np.array(answer["probabilities"])
    positive = model.predict_proba(X[:ROWS])
    assert served.shape == (3, ROWS, 2)
    assert np.array_equal(served[:, :, 1], positive.T)
    assert np.allclose(served.sum(axis=2), 1.0)
    assert answer["classes"] == [[0, 1]] * 3


def test_probabilities_from_a_multi_output_regressor_are_a_400_saying_to_omit_them(lambda_env: Path) -> None:
    # given a multi-output regressor (no predict_proba)
    model, X = MULTI_OUTPUT["MultiOutputRegressor"]()
    handler = serve(lambda_env, "multi", model)

    # when probabilities are asked for
    status, answer = request(
        handler, "POST", "/v1/models/multi:predict", {"instances": X[:2].tolist(), "probabilities": True}
    )

    # then the answer is a 400 that says what to do
    assert status == 400
    assert answer["error"]["code"] == "bad_request" and '"probabilities"' in answer["error"]["message"]


class OddOutputModel:
    """A model whose answer has an unusual type (admitted through PICKLE_ALLOWLIST_EXTRA, as an operator would)."""

    n_features_in_ = 4

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def predict(self, X: Any) -> Any:
        return ODD_OUTPUTS[self.kind](np.asarray(X, dtype=float))

    def predict_proba(self, X: Any) -> Any:
        # Probabilities for two outputs of three and two classes, but in a shape that fits neither.
        return np.full((len(X), 2), 0.5)

    @property
    def classes_(self) -> Any:
        return [np.array([0, 1, 2]), np.array([0, 1])]


ODD_OUTPUTS: dict[str, Callable[[Any], Any]] = {
    "object array of string labels": lambda X: np.where(X[:, 0] > 5.8, "big", "small").astype(object),
    "unicode array of labels": lambda X: np.where(X[:, 0] > 5.8, "big", "small"),
    "numpy scalar": lambda X: np.float64(X.sum()),
    "0-d array": lambda X: np.array(X.sum()),
    "sparse matrix": lambda X: sparse.csr_matrix(X[:, :2]),
    "big-endian floats": lambda X: X[:, 0].astype(">f8"),
    "Fortran-ordered matrix": lambda X: np.asfortranarray(X[:, :2]),
    "list of numpy scalars": lambda X: [np.int64(v) for v in X[:, 0]],
    "complex numbers": lambda X: X[:, 0] + 1j,
    "byte strings": lambda X: np.where(X[:, 0] > 5.8, b"big", b"small"),
}
NO_JSON_FORM = {"complex numbers": "complex", "byte strings": "bytes"}


def _plain(output: Any) -> Any:
    """What the in-process answer is in plain Python (the reference the served JSON is compared with)."""
    output = output.toarray() if sparse.issparse(output) else output
    return np.asarray(output).tolist()


@pytest.mark.parametrize("kind", sorted(ODD_OUTPUTS.keys() - NO_JSON_FORM.keys()))
def test_an_unusual_prediction_type_is_served_as_plain_json_equal_to_the_models_answer(
    kind: str, lambda_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a model answering an unusual type
    monkeypatch.setenv("PICKLE_ALLOWLIST_EXTRA", f"{__name__}:OddOutputModel")
    model, (X, _Y) = OddOutputModel(kind), _data()
    handler = serve(lambda_env, "odd", model)

    # when it predicts through the handler
    status, answer = request(handler, "POST", "/v1/models/odd:predict", {"instances": X[:ROWS].tolist()})

    # then the answer is the model's, as plain JSON
    assert status == 200, answer
    assert answer["predictions"] == _plain(model.predict(X[:ROWS]))


@pytest.mark.parametrize("kind", sorted(NO_JSON_FORM))
def test_a_prediction_with_no_json_form_is_a_clear_json_error(
    kind: str, lambda_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a model answering values JSON cannot hold
    monkeypatch.setenv("PICKLE_ALLOWLIST_EXTRA", f"{__name__}:OddOutputModel")
    handler = serve(lambda_env, "odd", OddOutputModel(kind))

    # when it predicts through the handler
    status, answer = request(handler, "POST", "/v1/models/odd:predict", {"instances": _data()[0][:2].tolist()})

    # then the invocation answers a JSON error naming the type that could not be written
    assert status == 500
    assert answer["error"]["code"] == "prediction_failed"
    assert f"holding {NO_JSON_FORM[kind]} values" in answer["error"]["message"]


def test_probabilities_in_a_shape_that_fits_no_output_are_a_400(
    lambda_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a two-output model whose predict_proba fits neither output's classes
    monkeypatch.setenv("PICKLE_ALLOWLIST_EXTRA", f"{__name__}:OddOutputModel")
    handler = serve(lambda_env, "odd", OddOutputModel("numpy scalar"))

    # when probabilities are asked for
    body = {"instances": _data()[0][:2].tolist(), "probabilities": True}
    status, answer = request(handler, "POST", "/v1/models/odd:predict", body)

    # then the answer is a 400 naming the shape and saying to omit them
    assert status == 400
    assert "(2, 2)" in answer["error"]["message"] and 'omit "probabilities"' in answer["error"]["message"]


def test_a_numeric_c_ordered_prediction_is_handed_to_the_serializer_as_it_is() -> None:
    # given the numeric answer of the fast path
    predictions = np.arange(6, dtype=float)

    # when it is shaped for the response
    shaped = jsonable(predictions, "predictions")

    # then it is the same array, not a copy or a list
    assert shaped is predictions
