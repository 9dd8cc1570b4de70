"""The package's data flow holds in its imports: staging is transfer -> safety -> store, serving is
safety -> loading -> serving, and nothing low imports anything higher.

Each module of `bigpickle` belongs to one layer (its first dotted component, with a few named exceptions);
a layer may import only the layers listed for it. The table is the architecture: changing it is a design
decision, not a way to make this test pass.

Two corrections the table needed when it first ran, both about where a module belongs, not what may import what:
`bigpickle.formats` (the format names and extensions staging and loading share) is its own lowest module, and
`loading.formats` belongs to loading: it turns a file into an object through safety's unpickler and scanner.
`osutils` (positional file I/O, the seam tests inject ENOSPC through) is foundation: the S3 copy and the
rewriter that writes the zero-copy layout both write files through it. And staging may send `warmup`'s event:
asking the predict function to load what was just published is the last step of staging an S3 event
(`staging.handle_s3_event`); warmup itself imports no staging.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "layers" / "bigpickle" / "bigpickle"

FOUNDATION = {"units", "errors", "observability", "checksums", "durable", "osutils"}
# layer -> the layers it may import besides itself and the foundation ("*": anything; dev tools only)
ALLOWED: dict[str, set[str]] = {
    "foundation": set(),
    "config": set(),
    "transfer": set(),
    "formats": set(),
    "features": set(),
    "safety": {"formats"},
    "store": {"formats"},
    "staging": {"config", "transfer", "safety", "store", "formats", "features", "warmup"},
    "loading": {"config", "safety", "store", "formats", "features"},
    "serving": {"config", "loading", "formats", "features"},
    "warmup": {"config", "loading"},
    "local": {"*"},
    "cli": {"*"},
}
# Modules that sit in another layer than their folder says (none today).
LAYER_OF_MODULE: dict[str, str] = {}


def layer_of(module: str) -> str:
    for prefix, layer in LAYER_OF_MODULE.items():
        if module == prefix or module.startswith(prefix + "."):
            return layer
    top = module.split(".")[0]
    return "foundation" if top in FOUNDATION else top


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            found[".".join(parts)] = path
    return found


def imports_of(module: str, path: Path) -> set[str]:
    """Every bigpickle module `module` imports, at any depth of its code (lazy imports count too)."""
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("bigpickle.")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
                found.add("bigpickle." + target)
            elif node.module and node.module.startswith("bigpickle"):
                found |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
    known = modules()
    named = set()
    for name in found:
        # `from bigpickle.x import y` names module x.y if it exists, else the attribute y of x
        dotted = name.removeprefix("bigpickle").lstrip(".")
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        if dotted:
            named.add(dotted)
    return named


def violations() -> list[str]:
    wrong = []
    for module, path in sorted(modules().items()):
        source = layer_of(module)
        for target in sorted(imports_of(module, path)):
            to = layer_of(target)
            if to not in (source, "foundation") and "*" not in ALLOWED[source] and to not in ALLOWED[source]:
                wrong.append(f"{module} ({source} layer) imports {target} ({to} layer)")
    return wrong


def test_given_the_package_when_its_imports_are_read_then_every_one_follows_the_data_flow() -> None:
    assert violations() == []


@pytest.mark.parametrize(
    ("module", "target"),
    [
        ("config", "safety.allowlist"),
        ("safety.unpickler", "config"),
        ("transfer.journal", "store"),
        ("formats", "store"),
        ("formats", "safety.layout"),
        ("safety.inspect", "store"),
        ("store", "loading.registry"),
        ("safety.scanner", "staging"),
        ("loading.registry", "serving.app"),
    ],
)
def test_given_an_import_against_the_flow_when_checked_then_the_table_refuses_it(module: str, target: str) -> None:
    assert layer_of(target) not in ALLOWED[layer_of(module)] | {layer_of(module), "foundation"}


def test_given_the_serving_package_then_it_reads_models_only_through_the_registry_api() -> None:
    """serving asks the registry for models; the store behind it is the registry's business."""
    reaching = [
        f"{path.name}:{node.lineno}"
        for path in (PACKAGE / "serving").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "store"
    ]
    assert reaching == []
