"""`bigpickle` command line. Each command parses arguments and calls the library; no logic lives here."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence


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


COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], int]]] = {
    "demo": ("run the whole pipeline locally (what `make demo` runs)", _demo),
    "serve": ("serve the predict handler on a local HTTP port, as `sam local start-api` would", _serve),
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command][1](args)


if __name__ == "__main__":
    sys.exit(main())
