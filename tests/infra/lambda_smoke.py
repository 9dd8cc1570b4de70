"""Run inside a stand-in of the Lambda runtime: the runtime's Python (3.13) started with -S, so only one built
function, its built layers and a copy of the runtime's own boto3 are importable, in Lambda's order
(/var/task, /opt/python, /var/runtime). Prints one JSON line of findings for test_build.py to check.

usage: python3.13 -S lambda_smoke.py stage|predict FUNCTION_DIR EVENTS_DIR MODELS_ROOT [LAYER_OR_RUNTIME_DIR ...]

`stage` imports the stage handler and trial-loads (as staging does) a pickle that holds a pandas object.

`predict` fits two models with what the layers ship (a forest on iris, and a DataFrame pipeline with a text
column), publishes them under MODELS_ROOT as staging does, and asks the handler about them: health, and the
sample DataFrame request (events/predict-dataframe.json) next to the in-process answer. It also times the
first `import pandas`, which a predict container pays on its first DataFrame request.
"""

import hashlib
import importlib.util
import json
import pickle
import sys
import time
import uuid

STAGE_MODULES = ("numpy", "sklearn", "pandas", "bigpickle", "aws_lambda_powertools", "awscrt", "botocore")
PREDICT_MODULES = ("numpy", "scipy", "sklearn", "pandas", "bigpickle", "aws_lambda_powertools", "awscrt", "botocore")


class Context:
    function_name = "bigpickle-smoke"
    memory_limit_in_mb = 3008
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:bigpickle-smoke"
    aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def load_handler_module(name: str, folder: str):
    spec = importlib.util.spec_from_file_location(name, f"{folder}/app.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module


def publish(models_root: str, name: str, model: object) -> None:
    """The model as staging leaves it: a version folder with the pickle and its manifest, made current."""
    from bigpickle.store import Manifest, ModelStore

    store = ModelStore(models_root)
    version = "20261130T120000Z-smoke"
    path = store.prepare_incoming(name, version) / "model.pkl"
    data = pickle.dumps(model, protocol=5)
    path.write_bytes(data)
    store.publish(
        Manifest(
            name=name, version=version, file=path.name, format="pickle", bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(), staged_at="2026-11-30T12:00:00+00:00", bucket="smoke",
            key=f"models/{name}/model.pkl", etag='"smoke"',
        )
    )  # fmt: skip


def dataframe_pipeline():
    import numpy as np
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    table = pd.DataFrame({"color": rng.choice(["red", "green", "blue"], 200), "size": rng.normal(10, 3, 200)})
    table["weight"] = rng.integers(1, 6, 200)
    target = ((table["size"] > 10) ^ (table["color"] == "red")).to_numpy().astype(int)
    encode = ColumnTransformer(
        [("c", OneHotEncoder(handle_unknown="ignore"), ["color"]), ("n", StandardScaler(), ["size", "weight"])]
    )
    return make_pipeline(encode, LogisticRegression()).fit(table, target)


def call(handler, event: dict) -> dict:
    response = handler(event, Context())
    return {"statusCode": response["statusCode"], "body": json.loads(response["body"])}


def smoke_predict(function_dir: str, events_dir: str, models_root: str) -> dict:
    started = time.perf_counter()
    import numpy  # noqa: F401  (the handler imports it first in any case)

    numpy_done = time.perf_counter()
    import pandas as pd

    pandas_seconds = time.perf_counter() - numpy_done
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    features, labels = load_iris(return_X_y=True)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(features, labels)
    tabular = dataframe_pipeline()
    publish(models_root, "iris", forest)
    publish(models_root, "tabular", tabular)

    predict = load_handler_module("predict_app", function_dir)
    with open(f"{events_dir}/health.json") as event_file:
        health = call(predict.lambda_handler, json.load(event_file))
    with open(f"{events_dir}/predict-dataframe.json") as event_file:
        event = json.load(event_file)
    answer = call(predict.lambda_handler, event)
    rows = pd.DataFrame(json.loads(event["body"])["instances"])
    return {
        "health": health,
        "dataframe": answer,
        "expected": {
            "predictions": tabular.predict(rows).tolist(),
            "probabilities": tabular.predict_proba(rows).tolist(),
        },
        "import_seconds": {"numpy": numpy_done - started, "pandas_after_numpy": pandas_seconds},
    }


def trial_load_pandas_object(folder: str) -> str:
    """Staging's trial load of a pickle that names a pandas global (pandas.NA): it needs pandas in the stage."""
    from pathlib import Path

    import pandas as pd
    from bigpickle.safety import Allowlist
    from bigpickle.safety.trial import trial_load
    from sklearn.impute import SimpleImputer

    imputer = SimpleImputer(missing_values=pd.NA).fit(pd.DataFrame({"a": pd.array([1.0, None, 3.0], dtype="Float64")}))
    path = Path(folder) / "imputer.pkl"
    path.write_bytes(pickle.dumps(imputer, protocol=5))
    trial_load(path, "pickle", Allowlist())
    return "loaded"


def main() -> None:
    role, function_dir, events_dir, models_root, *search_path = sys.argv[1:]
    sys.path[1:1] = search_path
    if role == "predict":
        found = smoke_predict(function_dir, events_dir, models_root)
        modules = PREDICT_MODULES
    else:
        load_handler_module("stage_app", function_dir)
        found, modules = {"trial_load": trial_load_pandas_object(models_root)}, STAGE_MODULES
    found["python"] = list(sys.version_info[:2])
    found["site_packages"] = [entry for entry in sys.path if "site-packages" in entry]
    found["modules"] = {name: getattr(sys.modules.get(name), "__file__", None) for name in modules}
    print(json.dumps(found))


if __name__ == "__main__":
    main()
