"""The ``jax-pccl`` command (also ``python -m jax_pccl``)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from .address import read_secret_file

SECRET_ENV = "JAX_PCCL_SECRET"


def _read_secret(args) -> bytes | None:
    """The master's secret: --secret-file, else $JAX_PCCL_SECRET, else None.

    Never taken from the command line itself (``ps`` and shell history would
    show it). One trailing newline of the file is ignored.
    """
    if args.secret_file:
        try:
            secret = read_secret_file(args.secret_file)
        except ValueError:
            raise ValueError(f"--secret-file {args.secret_file}: the file is empty") from None
        try:
            mode = os.stat(args.secret_file).st_mode
        except OSError:
            mode = 0
        if mode & 0o077:
            print(f"warning: --secret-file {args.secret_file} is readable by other users "
                  f"(chmod 600 it)", file=sys.stderr, flush=True)
        return secret
    env = os.environ.get(SECRET_ENV)
    if env is not None:
        if not env:
            raise ValueError(f"${SECRET_ENV} is set but empty: unset it for no authentication")
        return env.encode("utf-8", "surrogateescape")
    return None


LOG_LEVELS = ("error", "warn", "info", "debug")


def _cmd_master(args) -> int:
    # The engine reads its log level once, when it first logs: set it first.
    os.environ["JAX_PCCL_LOG"] = args.log_level
    from .errors import PcclError
    from .master import Master

    try:
        secret = _read_secret(args)
    except (OSError, ValueError) as exc:
        print(f"jax-pccl master: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        master = Master(host=args.host, port=args.port, secret=secret,
                        heartbeat_timeout=args.heartbeat_timeout,
                        probe_seconds=args.probe_seconds,
                        probe_connections=args.probe_connections)
    except (PcclError, OSError, ValueError) as exc:  # a port in use, a bad address
        # the engine's message already names the address ("cannot listen on H:P: why")
        why = str(exc)
        if not why.startswith("cannot listen on"):
            why = f"cannot listen on {args.host}:{args.port}: {why}"
        print(f"jax-pccl master: {why}", file=sys.stderr)
        return 1
    with master:
        auth = "shared-secret authentication" if secret else "no authentication"
        del secret
        print(f"jax-pccl master listening on {master.address} ({auth})", flush=True)
        http = None
        if args.http_port is not None:
            from .http_status import StatusHTTPServer

            try:
                http = StatusHTTPServer(master, args.http_host, args.http_port)
            except OSError as exc:
                print(f"jax-pccl master: cannot serve HTTP on {args.http_host}:{args.http_port}: "
                      f"{exc.strerror or exc}", file=sys.stderr)
                return 1
            print(f"jax-pccl master: status on http://{http.address}/ (/status.json, /metrics)",
                  flush=True)
        try:
            while not stop.wait(0.5):
                pass
        finally:
            if http is not None:
                http.close()
    print("jax-pccl master stopped", flush=True)
    return 0


def _cmd_launch(args) -> int:
    from .launch import run

    if args.n < 1:
        print("jax-pccl launch: -n must be at least 1", file=sys.stderr)
        return 2
    try:
        return run(args.n, args.script, args.args, args.master, args.secret_file)
    except (OSError, ValueError) as exc:  # no such script, a bad address, an empty secret file
        print(f"jax-pccl launch: {exc}", file=sys.stderr)
        return 2


def _cmd_status(args) -> int:
    import json

    from .errors import PcclError
    from .status import format_status, master_status

    try:
        secret = _read_secret(args)
    except (OSError, ValueError) as exc:
        print(f"jax-pccl status: {exc}", file=sys.stderr)
        return 2
    try:
        status = master_status(args.master, secret=secret, timeout=args.timeout)
    except ValueError as exc:  # a malformed address
        print(f"jax-pccl status: {exc}", file=sys.stderr)
        return 2
    except PcclError as exc:  # unreachable, refused
        print(f"jax-pccl status: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args.peers, args.steps, args.batch, args.lr, args.timeout)


def _probe_seconds(text: str) -> float:
    value = float(text)
    if not 0.001 <= value <= 60.0:
        raise argparse.ArgumentTypeError("must be between 0.001 and 60 seconds")
    return value


def _probe_connections(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 32:
        raise argparse.ArgumentTypeError("must be between 1 and 32")
    return value


def _http_port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be a TCP port, 0 to 65535 (0: a free one)")
    return value


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 1.0:
        raise argparse.ArgumentTypeError("must exceed the 1 s heartbeat interval")
    return value


def _version() -> str:
    from . import __version__

    return __version__


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, exit 2 (API.md); argparse prints
    its whole usage block first. Subparsers are made of this class too."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jax-pccl", description=__doc__)
    parser.add_argument("--version", action="version", version=f"jax-pccl {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    m = sub.add_parser("master", help="run a master until SIGINT/SIGTERM")
    m.add_argument("--host", default="0.0.0.0")
    m.add_argument("--port", type=int, default=48148)
    m.add_argument("--secret-file", default=None, metavar="PATH",
                   help="file holding the shared secret (default: $JAX_PCCL_SECRET; "
                        "neither: no authentication)")
    m.add_argument("--heartbeat-timeout", type=_positive_seconds, default=4.0, metavar="S",
                   help="drop a peer silent this long (default 4.0)")
    m.add_argument("--probe-seconds", type=_probe_seconds, default=1.0, metavar="S",
                   help="optimize_topology(): how long each link probe sends (default 1.0)")
    m.add_argument("--probe-connections", type=_probe_connections, default=4, metavar="K",
                   help="optimize_topology(): TCP connections per link probe (default 4)")
    m.add_argument("--http-port", type=_http_port, default=None, metavar="P",
                   help="also serve /status.json, /metrics (Prometheus) and / (live page) on "
                        "this port (0: a free one, printed); default: no HTTP")
    m.add_argument("--http-host", default="127.0.0.1", metavar="HOST",
                   help="address of the HTTP side (default 127.0.0.1: the status names every "
                        "peer's address)")
    env_level = os.environ.get("JAX_PCCL_LOG", "")
    m.add_argument("--log-level", choices=LOG_LEVELS,
                   default=env_level if env_level in LOG_LEVELS else "info",
                   help="engine log level on stderr; info logs joins, drops and their "
                        "reasons (default: $JAX_PCCL_LOG, else info)")
    m.set_defaults(fn=_cmd_master)

    la = sub.add_parser("launch", help="run N local peers of a script (and a master if none given)",
                        description="Starts a local master unless --master is given, then N "
                                    "peer processes of SCRIPT with JAX_PCCL_MASTER (and "
                                    "JAX_PCCL_SECRET_FILE) set; prefixes their output with "
                                    "[index]; forwards SIGINT/SIGTERM; exits non-zero if any "
                                    "peer failed.")
    la.add_argument("-n", type=int, required=True, metavar="N", help="peer processes to start")
    la.add_argument("--master", default=None, metavar="HOST:PORT",
                    help="an existing master (default: start one on 127.0.0.1)")
    la.add_argument("--secret-file", default=None, metavar="PATH",
                    help="the shared secret: the local master uses it, the peers get its path")
    la.add_argument("script", help="the peers' Python script")
    la.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the script")
    la.set_defaults(fn=_cmd_launch)

    st = sub.add_parser("status", help="a running master's peers, rings and recent events")
    st.add_argument("--master", required=True, metavar="HOST:PORT", help="the master to ask")
    st.add_argument("--secret-file", default=None, metavar="PATH",
                    help="file holding the shared secret (default: $JAX_PCCL_SECRET; "
                         "neither: no authentication)")
    st.add_argument("--json", action="store_true", help="the whole report as JSON")
    st.add_argument("--timeout", type=float, default=10.0, metavar="S",
                    help="bound on the exchange (default 10)")
    st.set_defaults(fn=_cmd_status)

    def add_training_args(p):
        p.add_argument("--peers", type=int, default=3)
        p.add_argument("--steps", type=int, default=200)
        p.add_argument("--batch", type=int, default=64)
        p.add_argument("--lr", type=float, default=0.05)

    d = sub.add_parser("demo", help="master + N local peers training data-parallel")
    add_training_args(d)
    d.add_argument("--timeout", type=float, default=300.0, help="hard limit in seconds")
    d.set_defaults(fn=_cmd_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
