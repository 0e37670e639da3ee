"""`python -m uplion.devstack up`: the local platform on embedded defaults, until Ctrl-C."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from .stack import MODELS_DIR, Stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="uplion-devstack", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the platform and block until interrupted")
    up.add_argument("--dir", type=Path, default=Path("build/devstack"), help="state and logs")
    up.add_argument("--gateway-port", type=int, default=50051, help="gRPC port of the gateway (0: any free port)")
    up.add_argument("--http-port", type=int, default=8080, help="OpenAI-compatible HTTP port of Envoy (0: any)")
    up.add_argument("--accounts-port", type=int, default=50061, help="gRPC port of the accounts service (0: any)")
    up.add_argument("--models", type=Path, default=MODELS_DIR, help="the AIModel manifests to serve (default: models/)")
    up.add_argument("--traces", action="store_true",
                    help="run an OpenTelemetry collector; every service sends it spans (docs/tracing.md)")  # fmt: skip
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    stack = Stack(
        args.dir.resolve(),
        gateway_port=args.gateway_port,
        http_port=args.http_port,
        accounts_port=args.accounts_port,
        models_dir=args.models,
        traces=args.traces,
    )
    try:
        stack.start()
        state = stack.describe()
        write_private(args.dir / "state.json", json.dumps(state, indent=2))
        print(stack.banner(), flush=True)
        while not stop.wait(1.0):
            dead = stack.dead()
            if dead:
                print(f"uplion: {', '.join(dead)} exited; stopping", file=sys.stderr)
                return 1
        return 0
    finally:
        stack.stop()


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds the admin token), atomically: created 0600
    under a temporary name, then renamed over the old one, so it is never readable by others, even
    for a moment, and never half written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


if __name__ == "__main__":
    sys.exit(main())
