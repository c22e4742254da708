"""``smesh sim`` / ``python -m smesh.sim``: parse arguments, run the simulator."""

from __future__ import annotations

import argparse
import logging

from smesh.sim.server import run_server, run_workers
from smesh.sim.settings import FAILURE_KINDS, FailureKind, SimSettings

__all__ = ["build_parser", "main", "settings_from_args"]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from exc
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds, got {text}")
    return value


def _rate(text: str) -> float:
    value = _seconds(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be within 0..1, got {text}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def build_parser(prog: str = "smesh sim") -> argparse.ArgumentParser:
    """The simulator's argument parser."""
    parser = argparse.ArgumentParser(
        prog=prog, description="An OpenAI-compatible model simulator (vLLM-style /metrics)."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (0: pick one)")
    parser.add_argument(
        "--model",
        dest="models",
        action="append",
        default=[],
        metavar="NAME",
        help="model name to serve (repeatable; default: any name)",
    )
    parser.add_argument("--ttft", type=_seconds, default=0.02, help="seconds to first token")
    parser.add_argument("--itl", type=_seconds, default=0.005, help="seconds between tokens")
    parser.add_argument(
        "--max-concurrency", type=_positive, default=256, help="requests generating at once"
    )
    parser.add_argument(
        "--failure-rate", type=_rate, default=0.0, help="probability a request fails (0..1)"
    )
    parser.add_argument("--failure-kind", choices=FAILURE_KINDS, default="500")
    parser.add_argument(
        "--echo", action="store_true", help="answer with the last user message verbatim"
    )
    parser.add_argument(
        "--max-tokens", type=_positive, default=16, help="filler tokens when a request sets none"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the failure dice")
    parser.add_argument(
        "--chunk-bytes",
        type=int,
        default=0,
        help="write answers in pieces of this many bytes (0: as they are produced)",
    )
    parser.add_argument(
        "--workers", type=_positive, default=1, help="processes sharing the port (SO_REUSEPORT)"
    )
    parser.add_argument("--log-level", default="WARNING", help="Python logging level")
    return parser


def settings_from_args(args: argparse.Namespace) -> SimSettings:
    """Build :class:`SimSettings` from parsed arguments."""
    kind: FailureKind = args.failure_kind
    return SimSettings(
        model_names=tuple(args.models),
        ttft=args.ttft,
        itl=args.itl,
        max_concurrency=args.max_concurrency,
        failure_rate=args.failure_rate,
        failure_kind=kind,
        echo=args.echo,
        max_tokens=args.max_tokens,
        seed=args.seed,
        chunk_bytes=args.chunk_bytes,
    )


def main(argv: list[str] | None = None, prog: str = "python -m smesh.sim") -> int:
    """Run the simulator until SIGINT/SIGTERM; return the exit status."""
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s %(message)s")
    settings = settings_from_args(args)
    if args.workers > 1:
        return run_workers(settings, args.host, args.port, args.workers)
    return run_server(settings, args.host, args.port)
