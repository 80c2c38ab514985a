"""``solargw web``: the NEP collector, /metrics, /data.json, the API and the web UI under gunicorn."""
from __future__ import annotations

import argparse

from appliance.cli import CommandError, load_service_settings


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
    from appliance.runtime import ServiceError
    from appliance.web.server import serve

    loaded = load_service_settings(args.settings)  # a broken file: the last good settings, said on /status
    try:
        return serve(loaded.settings, args.bind, settings_error=loaded.problem)
    except ServiceError as exc:
        raise CommandError(str(exc)) from None
