"""bigpickle: stage multi-GB pickled scikit-learn models from S3 to EFS and serve them from Lambda.

Modules by concern (data flows one way):
    staging side:  transfer (S3 -> file) -> store (publish a version)
    predict side:  serving (HTTP API) -> loading (file -> model) -> store (read the current version)
    config holds every setting; local runs the Docker-free stack; cli wraps it all.
    Both sides share formats (model file formats by name) and the foundation (errors, units, osutils, ...);
    tests/unit/test_import_direction.py holds the imports to this flow.
"""

__version__ = "0.1.0"
