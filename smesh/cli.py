"""``smesh``: one command for the whole mesh.

smesh validate FILE     config errors as file:line: field: message (exit 1), or "ok"
smesh render FILE       the Envoy resources xds would push, as JSON
smesh xds --config F    the control plane (ADS + admin)
smesh extproc --config F  the inline ext_proc service (tenancy, routing, metering)
smesh key new TENANT    a new API key (printed once) and the hash line for the config
smesh sim [...]         the OpenAI-compatible model simulator
smesh up [--config F]   xds + simulators + a real Envoy, with a status table
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson
from google.protobuf import json_format

__all__ = ["main"]


def _validate(args: argparse.Namespace) -> int:
    from smesh.config.loader import ConfigError, load_config

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        for line in exc.lines:
            print(line)
        return 1
    print(
        f"{args.file}: ok ({len(config.listeners)} listeners, {len(config.models)} models, "
        f"{len(config.clusters)} clusters, {len(config.tenants)} tenants)"
    )
    return 0


def _render(args: argparse.Namespace) -> int:
    from smesh.config.loader import ConfigError, load_config
    from smesh.config.schema import Endpoint
    from smesh.xds.resources import ADS_ORDER
    from smesh.xds.snapshot import check_consistency
    from smesh.xds.translate import translate

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return 1
    # Simulated clusters without a fixed port get theirs from `smesh up`; show port 0.
    simulated = {
        c.name: (Endpoint(address="127.0.0.1", port=c.simulate.port or 1),)
        for c in config.clusters
        if c.simulate is not None
    }
    resources = translate(config, simulated)
    out = {
        type_url.rsplit(".", 1)[-1]: [
            json_format.MessageToDict(m, preserving_proto_field_name=True)
            for _, m in sorted(resources[type_url].items())
        ]
        for type_url in ADS_ORDER
    }
    sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    from smesh.xds.snapshot import Snapshot

    problems = check_consistency(Snapshot.build(resources))
    for problem in problems:
        print(f"inconsistent: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _xds(args: argparse.Namespace) -> int:
    from smesh.xds.app import XdsSettings, main_xds
    from smesh.xds.server import ServerTls

    tls = None
    if args.tls_cert:
        tls = ServerTls(
            Path(args.tls_cert),
            Path(args.tls_key),
            Path(args.tls_client_ca) if args.tls_client_ca else None,
        )
    state = Path(args.state_dir) if args.state_dir else None
    return main_xds(
        XdsSettings(Path(args.config), args.host, args.port, args.admin_port, tls, state)
    )


def _extproc(args: argparse.Namespace) -> int:
    from smesh.extproc.server import ExtProcSettings, run_extproc

    return run_extproc(
        ExtProcSettings(
            config=Path(args.config),
            address=args.host,
            port=args.port,
            workers=args.workers,
            threads=args.threads,
            metrics_port=args.metrics_port,
            tls_cert=Path(args.tls_cert) if args.tls_cert else None,
            tls_key=Path(args.tls_key) if args.tls_key else None,
            server=args.server,
        )
    )


def _key_new(args: argparse.Namespace) -> int:
    from smesh.extproc.keys import hash_api_key, new_api_key

    key = new_api_key()
    print(f"API key for tenant {args.tenant} (shown once; store it now):\n\n  {key}\n")
    print("Add its hash to the tenant in mesh.yaml (only the hash is stored):\n")
    print(f'  - name: {args.tenant}\n    api_keys: ["{hash_api_key(key)}"]')
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    from smesh.extproc.audit import AuditKeyError, read_key, verify

    path = Path(args.file)
    key = None
    if args.key_file:
        try:
            key = read_key(Path(args.key_file))
        except AuditKeyError as exc:
            print(exc, file=sys.stderr)
            return 2
    scope = (
        "hashes, links and MACs checked"
        if key is not None
        else "hashes and links only: without --key-file a rewrite of the whole log passes"
    )
    result = verify(path, key)
    if not result.ok:
        print(result.error)
        print(f"({scope})", file=sys.stderr)
        return 1
    print(f"{path}: ok, {result.records} records in {result.files} file(s) ({scope})")
    return 0


def _sim(args: argparse.Namespace) -> int:
    from smesh.sim.cli import main as sim_main

    return sim_main(list(args.rest), prog="smesh sim")


def _up(args: argparse.Namespace) -> int:
    from smesh.up import StackSettings, run_stack

    return run_stack(
        StackSettings(
            config=Path(args.config) if args.config else None,
            port=args.port,
            state_dir=Path(args.state_dir),
            host=args.host,
        )
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smesh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a mesh config")
    p.add_argument("file")
    p.set_defaults(func=_validate)

    p = sub.add_parser("render", help="print the Envoy resources a config compiles to")
    p.add_argument("file")
    p.set_defaults(func=_render)

    p = sub.add_parser("xds", help="run the control plane")
    p.add_argument("--config", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18000, help="ADS gRPC port (0: any)")
    p.add_argument("--admin-port", type=int, default=18001, help="/status, /metrics (0: any)")
    p.add_argument("--tls-cert", help="serve ADS over TLS with this certificate")
    p.add_argument("--tls-key")
    p.add_argument("--tls-client-ca", help="require client certificates signed by this CA")
    p.add_argument(
        "--state-dir",
        default=".smesh/xds",
        help="recent snapshots, so a restarted xds knows what reconnecting Envoys hold "
        "('' keeps them in memory only)",
    )
    p.set_defaults(func=_xds)

    p = sub.add_parser("extproc", help="run the ext_proc service")
    p.add_argument("--config", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18080)
    p.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    p.add_argument("--threads", type=int, default=256, help="concurrent requests per worker")
    p.add_argument(
        "--server",
        choices=["aio", "sync"],
        default="aio",
        help="grpc.aio (one event loop; measured 1.6x a thread pool at 32 concurrent "
        "requests) or the thread-pool server (--threads applies)",
    )
    p.add_argument("--metrics-port", type=int, help="Prometheus /metrics (worker i: +i)")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.set_defaults(func=_extproc)

    p = sub.add_parser("key", help="API keys")
    keys = p.add_subparsers(dest="key_command", required=True)
    k = keys.add_parser("new", help="print a new API key once, and the hash for the config")
    k.add_argument("tenant")
    k.set_defaults(func=_key_new)

    p = sub.add_parser("audit", help="the tamper-evident audit log")
    audit = p.add_subparsers(dest="audit_command", required=True)
    a = audit.add_parser("verify", help="check a log and its rotated files (first bad line)")
    a.add_argument("file", help="the live log (its rotated .NNNNNN files are checked first)")
    a.add_argument("--key-file", help="the HMAC key: also check the MACs (detects a rewrite)")
    a.set_defaults(func=_audit_verify)

    # Every argument after `sim` (--help included) belongs to the simulator's own parser.
    p = sub.add_parser("sim", help="run the model simulator", add_help=False)
    p.set_defaults(func=_sim)

    p = sub.add_parser("up", help="run the whole stack")
    p.add_argument("--config", help="mesh YAML (default: the embedded demo config)")
    p.add_argument("--port", type=int, default=None, help="gateway port (default: config's)")
    p.add_argument("--host", default=None, help="gateway address (default: config's)")
    p.add_argument("--state-dir", default=".smesh", help="logs and rendered bootstrap")
    p.set_defaults(func=_up)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "sim":
        args.rest = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "xds" and args.tls_cert and not args.tls_key:
        print("--tls-cert needs --tls-key", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
