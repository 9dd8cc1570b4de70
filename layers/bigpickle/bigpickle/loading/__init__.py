"""A published version -> a model in memory: formats, mmap, capacity guard, version safety, registry. No HTTP.

`load_model_file` (formats.py) is the one place a file becomes an object; everything else here decides
which file, whether it fits, and how long it stays.
"""

from bigpickle.formats import BIGPICKLE
from bigpickle.loading.formats import format_of, load_model_file, save_model
from bigpickle.loading.registry import LoadedModel, ModelRegistry

__all__ = ["BIGPICKLE", "LoadedModel", "ModelRegistry", "format_of", "load_model_file", "save_model"]
