"""Run inside a stand-in of the Lambda runtime: the runtime's Python (3.13) started with -S, so only the
built function, the built layers and a copy of the runtime's own boto3 are importable, in Lambda's order
(/var/task, /opt/python, /var/runtime). Prints one JSON line of findings for test_build.py to check.

usage: python3.13 -S lambda_smoke.py STAGE_DIR PREDICT_DIR EVENT_JSON [LAYER_OR_RUNTIME_DIR ...]
"""

import importlib.util
import json
import pickle
import sys
import uuid


class Context:
    function_name = "bigpickle-predict"
    memory_limit_in_mb = 3008
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:bigpickle-predict"
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


def main() -> None:
    stage_dir, predict_dir, event_path, *search_path = sys.argv[1:]
    sys.path[1:1] = search_path

    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    features, labels = load_iris(return_X_y=True)
    model = pickle.loads(pickle.dumps(RandomForestClassifier(n_estimators=5, random_state=0).fit(features, labels)))

    load_handler_module("stage_app", stage_dir)
    predict = load_handler_module("predict_app", predict_dir)
    with open(event_path) as event_file:
        response = predict.lambda_handler(json.load(event_file), Context())

    print(
        json.dumps(
            {
                "python": list(sys.version_info[:2]),
                "site_packages": [entry for entry in sys.path if "site-packages" in entry],
                "predictions": model.predict(features[:3]).tolist(),
                "modules": {
                    name: sys.modules[name].__file__
                    for name in ("numpy", "scipy", "sklearn", "bigpickle", "aws_lambda_powertools", "botocore")
                },
                "health": {"statusCode": response["statusCode"], "body": json.loads(response["body"])},
            }
        )
    )


if __name__ == "__main__":
    main()
