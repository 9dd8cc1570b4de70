"""`bigpickle` command line. Each command parses arguments and calls the library; no logic lives here."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def _demo(_args: argparse.Namespace) -> int:
    from bigpickle.local import demo

    return demo.main()


def _serve(args: argparse.Namespace) -> int:
    os.environ["MODELS_ROOT"] = args.models_root
    if args.model_name:
        os.environ["MODEL_NAME"] = args.model_name
    from bigpickle.local.apigw import ApiGatewayBridge
    from bigpickle.local.runtime import predict_handler

    bridge = ApiGatewayBridge(predict_handler(), port=args.port)
    print(f"serving {args.models_root} on {bridge.url} (Ctrl+C to stop)", flush=True)
    try:
        bridge.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        bridge.server_close()
    return 0


def _stage(args: argparse.Namespace) -> int:
    os.environ["MODELS_ROOT"] = args.models_root
    if not args.verbose:  # the bar shows progress; the JSON log lines would bury it
        os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    from bigpickle.staging import stage_uri
    from bigpickle.transfer.progress import ProgressBar

    # "published_not_current" (an older upload) and "already_published" are successes too: `reason` says why
    result = _refusal_or(lambda: stage_uri(args.uri, progress=ProgressBar(sys.stderr)))
    if result is None:
        return 1
    print(json.dumps(result.as_dict(), indent=2))
    return 0


def _refusal_or(run: Callable[[], Any]) -> Any:
    """What `run` returns, or None after printing why the library refused (a typed error, not a trace)."""
    from bigpickle.errors import BigPickleError

    try:
        return run()
    except BigPickleError as exc:
        print(f"bigpickle: {exc.code}: {exc.message}", file=sys.stderr)
        return None


def _convert(args: argparse.Namespace) -> int:
    from bigpickle.loading.formats import convert

    print(json.dumps(convert(Path(args.source), Path(args.target)), indent=2))
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from bigpickle.loading.rollback import rollback
    from bigpickle.store import ModelStore

    # Holds until a newer upload arrives: re-delivered events of the versions published so far do not undo it.
    rolled = _refusal_or(lambda: rollback(ModelStore(args.models_root), args.name, args.version))
    if rolled is None:
        return 1
    print(f"{args.name}: current version {rolled[0]} -> {rolled[1]}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from bigpickle.config import Settings
    from bigpickle.safety import Allowlist
    from bigpickle.safety.inspect import inspect_file, render

    facts = inspect_file(Path(args.file), Allowlist(Settings.from_env().pickle_allowlist_extra))
    print(json.dumps(facts, indent=2) if args.json else render(facts))
    return 0 if facts["verdict"] == "safe to load" else 1


COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], int]]] = {
    "demo": ("run the whole pipeline locally (what `make demo` runs)", _demo),
    "serve": ("serve the predict handler on a local HTTP port, as `sam local start-api` would", _serve),
    "stage": ("copy s3://BUCKET/models/NAME/FILE to --models-root and publish it (the stage Lambda's engine)", _stage),
    "convert": ("re-save a model in the format OUT's extension names (.bpk: zero-copy, mmap-able)", _convert),
    "rollback": (
        "point NAME's current version at VERSION (default: the upload before the current); holds until a newer upload",
        _rollback,
    ),
    "inspect": ("what a model file imports and whether it would be loaded (nothing in it runs)", _inspect),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bigpickle", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, _run) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name == "serve":
            command.add_argument(
                "--models-root",
                default=os.environ.get("MODELS_ROOT", "./models"),
                help="folder standing in for the EFS mount (MODELS_ROOT)",
            )
            command.add_argument(
                "--model-name",
                default=os.environ.get("MODEL_NAME"),
                help="default model for POST /predict (MODEL_NAME)",
            )
            command.add_argument("--port", type=int, default=3000)
        elif name == "stage":
            command.add_argument("uri", metavar="S3_URI", help="s3://bucket/models/<name>/<file>.pkl|.pickle|.joblib")
            command.add_argument(
                "--models-root",
                default=os.environ.get("MODELS_ROOT", "./models"),
                help="folder standing in for the EFS mount (MODELS_ROOT)",
            )
            command.add_argument("--verbose", action="store_true", help="also print the JSON log lines")
        elif name == "convert":
            command.add_argument("source", metavar="IN", help="a .pkl/.pickle/.joblib/.bpk model file")
            command.add_argument("target", metavar="OUT", help="where to write it; the extension picks the format")
        elif name == "inspect":
            command.add_argument("file", metavar="FILE", help="a .pkl/.pickle/.joblib/.bpk model file")
            command.add_argument("--json", action="store_true", help="print the facts as JSON")
        elif name == "rollback":
            command.add_argument("name", metavar="NAME")
            command.add_argument("version", metavar="VERSION", nargs="?", help="default: the previous version")
            command.add_argument(
                "--models-root", default=os.environ.get("MODELS_ROOT", "./models"), help="the EFS mount (MODELS_ROOT)"
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command][1](args)


if __name__ == "__main__":
    sys.exit(main())
