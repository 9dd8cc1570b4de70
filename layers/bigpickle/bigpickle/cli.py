"""`bigpickle` command line. Each command parses arguments and calls the library; no logic lives here.

A user's mistake (no credentials, a malformed S3 URL, a missing file, an unreachable endpoint, a bucket
or key that does not exist) is answered with one line that says what to fix and exit status 1 (2 for
wrong arguments); `--debug` shows the traceback instead. `main` maps every error to that line.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from bigpickle.errors import BigPickleError

if TYPE_CHECKING:
    from bigpickle.config import Settings

EXIT_ERROR = 1
EXIT_USAGE = 2  # what argparse answers wrong arguments with


class UserError(Exception):
    """A mistake the user can fix; the message says what to fix."""


def _demo(_args: argparse.Namespace) -> int:
    from bigpickle.local import demo

    return demo.main()


def _settings(**overrides: Any) -> Settings:
    """The settings from the environment, with what the command line says instead (never written back)."""
    from bigpickle.config import Settings

    return dataclasses.replace(Settings.from_env(), **{k: v for k, v in overrides.items() if v is not None})


def _serve(args: argparse.Namespace) -> int:
    from bigpickle.local.apigw import ApiGatewayBridge
    from bigpickle.serving import create_app

    app = create_app(_settings(models_root=Path(args.models_root), model_name=args.model_name))
    bridge = ApiGatewayBridge(app.resolve, port=args.port)
    print(f"serving {args.models_root} on {bridge.url} (Ctrl+C to stop)", flush=True)
    try:
        bridge.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        bridge.server_close()
    return 0


def _stage(args: argparse.Namespace) -> int:
    from bigpickle.observability import logger
    from bigpickle.staging import stage_uri
    from bigpickle.transfer.progress import ProgressBar

    if not args.verbose and "POWERTOOLS_LOG_LEVEL" not in os.environ:  # the bar shows progress; logs would bury it
        logger.setLevel(logging.WARNING)
    _check_s3_object(args.uri)
    # "published_not_current" (an older upload) and "already_published" are successes too: `reason` says why
    result = stage_uri(
        args.uri, progress=ProgressBar(sys.stderr), settings=_settings(models_root=Path(args.models_root))
    )
    print(json.dumps(result.as_dict(), indent=2))
    return 0


def _convert(args: argparse.Namespace) -> int:
    from bigpickle.config import Settings
    from bigpickle.loading.formats import convert
    from bigpickle.safety import Allowlist

    allowlist = Allowlist(Settings.from_env().pickle_allowlist_extra)
    print(json.dumps(convert(Path(args.source), Path(args.target), allowlist=allowlist), indent=2))
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from bigpickle.loading.rollback import rollback
    from bigpickle.store import ModelStore

    # Holds until a newer upload arrives: re-delivered events of the versions published so far do not undo it.
    previous, current = rollback(ModelStore(args.models_root), args.name, args.version)
    print(f"{args.name}: current version {previous} -> {current}")
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
    "serve": ("serve the prediction API on a local HTTP port, one API Gateway event per request", _serve),
    "stage": ("copy s3://BUCKET/models/NAME/FILE to --models-root and publish it (the stage Lambda's engine)", _stage),
    "convert": ("re-save a model in the format OUT's extension names (.bpk: zero-copy, mmap-able)", _convert),
    "rollback": (
        "point NAME's current version at VERSION (default: the upload before the current); holds until a newer upload",
        _rollback,
    ),
    "inspect": ("what a model file imports and whether it would be loaded (nothing in it runs)", _inspect),
}


class _Parser(argparse.ArgumentParser):
    """argparse, answering wrong arguments in one line instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def s3_model_url(text: str) -> str:
    """The `stage` argument: s3://BUCKET/models/NAME/FILE with a model file's extension."""
    from bigpickle.formats import MODEL_FORMATS
    from bigpickle.staging import ModelKey

    url = urlsplit(text)
    if url.scheme != "s3" or not url.netloc or not url.path.strip("/"):
        raise argparse.ArgumentTypeError(f"{text!r} is not an S3 URL: write s3://BUCKET/models/NAME/FILE.pkl")
    try:
        key = ModelKey.parse(url.path.lstrip("/"))
    except BigPickleError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error.message}") from None
    if key is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a model's key: write s3://{url.netloc}/models/NAME/FILE, FILE ending in "
            f"{', '.join(MODEL_FORMATS)}"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bigpickle",
        description="Stage, serve and inspect scikit-learn models too big for the usual tools. A mistake is "
        "answered in one line (exit status 1; 2 for wrong arguments); --debug shows the traceback instead.",
    )
    debug_help = "show the traceback of an error instead of one line"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, _run) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
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
            command.add_argument(
                "uri", metavar="S3_URI", type=s3_model_url, help="s3://bucket/models/<name>/<file>.pkl|.pickle|.joblib"
            )
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


def _check_s3_object(url: str) -> None:
    """Answer a wrong endpoint, credentials, bucket or key in a second, before the copy, whose client retries
    for a minute and whose HEAD cannot say which of these is wrong (a HEAD answer has no error code)."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    bucket, key = urlsplit(url).netloc, urlsplit(url).path.lstrip("/")
    client = boto3.client("s3", config=Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=5))
    try:
        client.get_object(Bucket=bucket, Key=key, Range="bytes=0-0")["Body"].close()
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code")
        if code == "NoSuchBucket":
            raise UserError(f"bucket {bucket!r} does not exist: check the bucket in {url}") from error
        if code == "NoSuchKey":
            raise UserError(f"bucket {bucket!r} has no object {key!r}: check the key in {url}") from error
        if code != "InvalidRange":  # an empty object: it exists, and staging says what is wrong with it
            raise


def _http_status(error: Any) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def explain(error: Exception) -> str:
    """The one line a user sees for `error`: what went wrong and what to fix."""
    from botocore.exceptions import ClientError, ConnectionError, NoCredentialsError, PartialCredentialsError

    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, BigPickleError):
        return f"{error.code}: {error.message}"
    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
    if isinstance(error, ConnectionError):  # botocore's: connect, read and endpoint failures
        endpoint = getattr(error, "kwargs", {}).get("endpoint_url", "the S3 endpoint")
        return f"cannot reach {endpoint}: check AWS_ENDPOINT_URL_S3 (or the network) and that the server is up"
    if isinstance(error, ClientError):
        return _explain_s3(error)
    if isinstance(error, FileNotFoundError):
        return f"no such file: {error.filename}"
    if isinstance(error, IsADirectoryError):
        return f"{error.filename} is a folder: give the path of a model file"
    if isinstance(error, PermissionError):
        return f"permission denied: {error.filename}"
    if isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
        return "the port is in use: pick another with --port"
    if isinstance(error, OSError):
        return f"{error.filename + ': ' if error.filename else ''}{error.strerror or error}"
    if isinstance(error, ValueError):  # the library's argument and setting checks say what is wrong
        return str(error)
    return f"unexpected {type(error).__name__}: {error} (--debug shows where)"


def _explain_s3(error: Any) -> str:
    code = error.response.get("Error", {}).get("Code", "")
    said = f"S3 answered {error.operation_name} with {code or _http_status(error)}"
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return f"{said}: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    if _http_status(error) == 403:
        return f"{said}: these credentials may not read it (s3:GetObject, s3:ListBucket), or it does not exist"
    if _http_status(error) == 404:
        return f"{said}: check the bucket and key"
    return f"{said}: {error.response.get('Error', {}).get('Message', error)}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except Exception as error:
        if args.debug:
            raise
        print(f"bigpickle: {explain(error)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
