"""The prediction API: routes, request validation, error mapping, JSON out.

It opens one file itself, its OpenAPI document (openapi.json, package data, read once). Models and their
manifests come through `loading`'s registry, which reads the model store.
"""

from bigpickle.serving.app import create_app

__all__ = ["create_app"]
