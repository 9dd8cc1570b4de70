"""The prediction API: routes, request validation, error mapping, JSON out. Never touches files."""

from bigpickle.serving.app import create_app

__all__ = ["create_app"]
