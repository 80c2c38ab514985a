"""``solargw web``: the NEP collector, /metrics, /data.json, the API and the web UI under gunicorn."""
from __future__ import annotations

import argparse

from appliance.cli import CommandError, load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "web", help="run the web collector (inverter ingest, UI, /metrics) under gunicorn",
        description="Run the collector under gunicorn (one worker, threads) and print where it listens.",
    )
    parser.add_argument("--settings", metavar="FILE", help="settings file (default: $SOLARGW_SETTINGS or "
                        "/etc/solargw/solargw.toml)")
    parser.add_argument("--bind", metavar="HOST:PORT", action="append",
                        help="listen here instead of [web] listen_addr/port (repeatable; port 0: any free port)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from appliance.store import Store, StoreError
    from appliance.web.server import WebServer, check_bind, format_bind, print_ready

    settings = load_settings(args.settings)
    binds = args.bind or [format_bind(settings.web.listen_addr, settings.web.port)]
    for bind in binds:
        problem = check_bind(bind)
        if problem:
            raise CommandError(problem)
    try:  # fail here, in one line, rather than in gunicorn's worker
        Store.from_settings(settings).close()
    except StoreError as exc:
        raise CommandError(str(exc)) from None
    try:
        WebServer(settings, binds, on_ready=print_ready).run()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
