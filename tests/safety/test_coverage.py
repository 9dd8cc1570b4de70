"""The allowlist covers scikit-learn, measured: every estimator of `sklearn.utils.all_estimators()` (and the
common non-default options) is staged and served through the real stage and predict handlers, and
predicts as it does in process. Only REFUSED_ON_PURPOSE may be refused.

It also checks the allowlist's split against real pickles: every global a legitimate pickle calls while
unpickling is a reconstructor (`may_call`), so the rule "references, not calls" refuses none of them.
"""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bigpickle.local.events import load_event
from bigpickle.local.runtime import predict_handler, stage_handler
from bigpickle.safety import Allowlist, PickleScanner

from tests.helpers import BUCKET, s3_put_event
from tests.safety.estimators import REFUSED_ON_PURPOSE, fitted_cases, sweep_cases

CASES = sweep_cases()
PREDICT_ROWS = 5


def _model_name(case: str) -> str:
    return "m" + str(sorted(CASES).index(case))


def _request(name: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
    event = copy.deepcopy(load_event("predict-single"))
    event["rawPath"] = event["requestContext"]["http"]["path"] = path.replace("{name}", name)
    event["requestContext"]["http"]["method"] = method
    event["body"] = None if body is None else json.dumps(body)
    event["isBase64Encoded"] = False
    return event


def _served_predictions(predict: Any, context: Any, name: str, model: Any, X: Any) -> str | None:
    """None when the handler answers as the model does in process; otherwise what differs."""
    metadata = predict(_request(name, "GET", "/v1/models/{name}"), context)
    if metadata["statusCode"] != 200:
        return f"metadata answered {metadata['statusCode']}: {metadata['body'][:300]}"
    rows = X[:PREDICT_ROWS]
    numeric = isinstance(rows, np.ndarray) and rows.ndim == 2
    if not hasattr(model, "predict") or not (numeric or isinstance(rows, list)):
        return None
    instances = rows.tolist() if numeric else rows
    answer = predict(_request(name, "POST", "/v1/models/{name}:predict", {"instances": instances}), context)
    if answer["statusCode"] != 200:
        return f"predict answered {answer['statusCode']}: {answer['body'][:300]}"
    expected = np.asarray(model.predict(rows))
    served = np.asarray(json.loads(answer["body"])["predictions"], dtype=expected.dtype)
    return None if np.array_equal(served, expected) else f"served {served!r}, in process {expected!r}"


@pytest.mark.slow  # ~250 models staged (with trial loads) and served: one to three minutes
def test_every_registry_estimator_and_common_option_is_staged_and_served_through_the_handlers(
    moto_s3: Any, lambda_env: Path, context: Any
) -> None:
    # given every case fitted and uploaded
    fitted = fitted_cases()
    stage = stage_handler()
    for case, (model, _X) in fitted.items():
        moto_s3.put_object(Bucket=BUCKET, Key=f"models/{_model_name(case)}/model.pkl", Body=pickle.dumps(model))

    # when each is staged, then loaded and asked to predict through the predict handler
    refused, wrong = {}, {}
    predict = predict_handler()
    for case, (model, X) in fitted.items():
        name = _model_name(case)
        try:
            stage(s3_put_event(BUCKET, f"models/{name}/model.pkl"), context)
        except Exception as exc:  # staging refused it: record why
            refused[case] = str(exc)
            continue
        try:
            problem = _served_predictions(predict, context, name, model, X)
        except Exception as exc:  # the handler raised instead of answering
            problem = f"the predict handler raised {type(exc).__name__}: {exc}"
        if problem:
            wrong[case] = problem

    # then only the documented cases are refused, and the rest answer exactly as in process
    served = len(CASES) - len(refused)
    print(f"allowlist coverage: {served}/{len(CASES)} cases staged and served")  # the figure docs/security.md cites
    assert refused.keys() == REFUSED_ON_PURPOSE.keys(), refused
    assert wrong == {}


class _CallRecorder(PickleScanner):
    """The staging scanner, noting every named global a pickle calls (REDUCE, NEWOBJ, OBJ, INST)."""

    def __init__(self) -> None:
        super().__init__("pickle")
        self.called: set[tuple[str, str]] = set()

    def _call(self, func: Any, args: Any) -> None:
        if hasattr(func, "module"):
            self.called.add((func.module, func.name))
        super()._call(func, args)


@pytest.mark.parametrize("protocol", [2, 5])
def test_every_global_a_legitimate_pickle_calls_is_a_reconstructor(protocol: int) -> None:
    allowlist = Allowlist()
    not_reconstructors: dict[str, set[tuple[str, str]]] = {}
    for case, (model, _X) in fitted_cases().items():
        recorder = _CallRecorder()
        recorder.update(pickle.dumps(model, protocol=protocol))
        recorder.finish()
        called = {pair for pair in recorder.called if not allowlist.may_call(*pair)}
        if called and case not in REFUSED_ON_PURPOSE:
            not_reconstructors[case] = called

    assert not_reconstructors == {}
