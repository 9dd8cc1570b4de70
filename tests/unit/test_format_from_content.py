"""The bytes decide an upload's format, not its extension: an upload whose content is not what its name
says is refused at staging with the reason, nothing is published, and the current version keeps serving."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from bigpickle.config import Settings
from bigpickle.errors import UnsafePickleError
from bigpickle.staging import stage_object
from bigpickle.store import ModelStore
from sklearn.linear_model import LinearRegression

from tests.helpers import BUCKET


def _model() -> LinearRegression:
    features = np.arange(40, dtype=float).reshape(20, 2)
    return LinearRegression().fit(features, features @ [1.0, 2.0])


def _pickled(model: Any) -> bytes:
    return pickle.dumps(model, protocol=5)


def _joblib(model: Any) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    return buffer.getvalue()


def _bigpickle(model: Any, tmp_path: Path) -> bytes:
    from bigpickle.loading import save_model

    path = tmp_path / "made.bpk"
    save_model(model, path, "bigpickle")
    return path.read_bytes()


# case -> (uploaded as, its bytes, the first reason given)
MISNAMED = {
    "a plain pickle named .bpk": ("model.bpk", lambda model, tmp: pickle.dumps(model, 4), "is a pickle file but its"),
    "a bigpickle layout named .pkl": ("model.pkl", _bigpickle, "is a bigpickle file but its name says pickle"),
    "a joblib file named .pkl": ("model.pkl", lambda model, tmp: _joblib(model), "is a joblib file but its name"),
    "text named .joblib": ("model.joblib", lambda model, tmp: b"not a model at all\n", "not a pickle"),
}


@pytest.mark.parametrize("case", sorted(MISNAMED))
def test_given_an_upload_whose_content_is_not_what_its_name_says_then_it_is_refused_and_nothing_moves(
    case: str, moto_s3: Any, store: ModelStore, settings: Settings, tmp_path: Path
) -> None:
    # given a model already serving under that name
    model = _model()
    moto_s3.put_object(Bucket=BUCKET, Key="models/reg/model.pkl", Body=_pickled(model))
    serving = stage_object(moto_s3, store, settings, BUCKET, "models/reg/model.pkl").version
    file_name, content, reason = MISNAMED[case]

    # when an upload arrives whose bytes are another format than its extension
    moto_s3.put_object(Bucket=BUCKET, Key=f"models/reg/{file_name}", Body=content(model, tmp_path))
    with pytest.raises(UnsafePickleError) as refused:
        stage_object(moto_s3, store, settings, BUCKET, f"models/reg/{file_name}")

    # then it is refused as never stageable, with a reason, and the model keeps its version
    assert refused.value.retryable is False
    assert any(reason in said for said in refused.value.reasons), refused.value.reasons
    assert store.current_version("reg") == serving and store.list_versions("reg") == [serving]
