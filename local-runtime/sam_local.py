"""Run `sam local invoke` / `sam local start-api` on a `sam build` with a local models folder and S3 server.

What `make local-invoke` and `make local-api` run (docs/local.md). Before SAM starts, it

1. links the models folder into the built predict function (`<build>/PredictFunction/models`), which
   SAM mounts read-only at /var/task/models with `--mount-symlinks`: the stand-in for the EFS access point;
2. writes the `--env-vars` file: local-runtime/env.json (MODELS_ROOT of both functions, MODEL_NAME, no
   warm-up invoke) plus the caller's AWS_ENDPOINT_URL_S3 for the stage function;
3. when that endpoint is on 127.0.0.1, relays it from Docker's bridge gateway: SAM runs every function
   container on the default bridge network (its `--docker-network host` only skips joining a network), so
   the container's 127.0.0.1 is its own. The relay listens on the gateway address only, which nothing but
   this machine and its containers can reach.

The AWS credentials of the calling environment reach the functions through SAM itself.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
ENV_VARS_TEMPLATE = HERE / "env.json"
MODELS_LINK = "models"  # <build>/PredictFunction/models -> the models folder (/var/task/models in the container)
LOOPBACK_NAMES = {"127.0.0.1", "localhost"}
RELAY_BUFFER_BYTES = 256 * 1024
SIOCGIFADDR = 0x8915  # Linux ioctl: an interface's IPv4 address


def bridge_gateway() -> str:
    """This host's address on Docker's default bridge network (docker0), where its containers reach it."""
    interface = subprocess.run(
        ["docker", "network", "inspect", "bridge", "--format", '{{ index .Options "com.docker.network.bridge.name" }}'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("256s", interface.encode()[:15])
        try:
            address = socket.inet_ntoa(fcntl.ioctl(probe.fileno(), SIOCGIFADDR, request)[20:24])
        except OSError as exc:
            raise SystemExit(f"sam_local: no IPv4 address on Docker's bridge {interface!r}: {exc}") from None
    return address


class TcpRelay:
    """Accepts on (host, free port) and pipes each connection to `target`, both ways, until either side closes."""

    def __init__(self, host: str, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server((host, 0))
        self.address = self._listener.getsockname()[:2]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="s3-relay", daemon=True)

    def start(self) -> TcpRelay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        with client, socket.create_connection(self.target) as upstream:
            peers = {client: upstream, upstream: client}
            with selectors.DefaultSelector() as selector:
                for sock in peers:
                    selector.register(sock, selectors.EVENT_READ)
                while not self._stopped.is_set():
                    for key, _ in selector.select(timeout=1):
                        data = key.fileobj.recv(RELAY_BUFFER_BYTES)
                        if not data:
                            return
                        peers[key.fileobj].sendall(data)


@contextmanager
def reachable_endpoint(endpoint: str) -> Iterator[str]:
    """`endpoint` as a function container reaches it (through a relay when it is on this host's loopback)."""
    parts = urlsplit(endpoint)
    if parts.hostname not in LOOPBACK_NAMES:
        yield endpoint
        return
    relay = TcpRelay(bridge_gateway(), ("127.0.0.1", parts.port or 80)).start()
    try:
        host, port = relay.address
        yield urlunsplit(parts._replace(netloc=f"{host}:{port}"))
    finally:
        relay.stop()


def link_models(build_dir: Path, models_dir: Path) -> None:
    models_dir.mkdir(parents=True, exist_ok=True)
    link = build_dir / "PredictFunction" / MODELS_LINK
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(models_dir.resolve(), target_is_directory=True)


def write_env_vars(path: Path, s3_endpoint: str | None) -> None:
    env_vars = json.loads(ENV_VARS_TEMPLATE.read_text())
    env_vars["PredictFunction"]["MODEL_NAME"] = (
        os.environ.get("MODEL_NAME") or env_vars["PredictFunction"]["MODEL_NAME"]
    )
    if s3_endpoint:
        env_vars["StageFunction"]["AWS_ENDPOINT_URL_S3"] = s3_endpoint
    path.write_text(json.dumps(env_vars, indent=2) + "\n")


def run_sam(command: list[str]) -> int:
    """Run SAM in the foreground. Ctrl-C (SIGINT to the process group) reaches SAM itself, which stops its
    containers; this process waits for that instead of exiting first."""
    # A handler, not SIG_IGN: an ignored signal would stay ignored in SAM across exec.
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        return subprocess.run(command).returncode
    finally:
        signal.signal(signal.SIGINT, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build-dir", type=Path, required=True, help="a `sam build --build-dir` folder")
    parser.add_argument("--models-dir", type=Path, required=True, help="the folder standing in for EFS")
    parser.add_argument("--env-vars", type=Path, required=True, help="where to write SAM's --env-vars file")
    parser.add_argument("sam", nargs=argparse.REMAINDER, help="the sam command line (after --)")
    args = parser.parse_args(argv)
    sam = [part for part in args.sam if part != "--"]

    link_models(args.build_dir, args.models_dir)
    with reachable_endpoint(os.environ.get("AWS_ENDPOINT_URL_S3", "")) as s3_endpoint:
        write_env_vars(args.env_vars, s3_endpoint)
        return run_sam([*sam, "--template", str(args.build_dir / "template.yaml"), "--env-vars", str(args.env_vars)])


if __name__ == "__main__":
    sys.exit(main())
