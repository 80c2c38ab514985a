"""The ``solargw`` command: a thin dispatcher over ``appliance.commands.*``.

Each command module defines ``register(subparsers)``, which adds its parser and
sets ``func(args) -> int``. Errors a user can fix are ``CommandError``: printed
as one line on stderr, exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from typing import TYPE_CHECKING

from appliance import __version__

if TYPE_CHECKING:
    from appliance.settings import Loaded, Settings

COMMAND_MODULES = (
    "decode",
    "firmware",
    "firstboot",
    "net",
    "web",
    "simulate",
    "zigbee",
    "demo",
)


class CommandError(Exception):
    """A user-facing failure: the message is printed as is, exit status 2."""


def load_settings(path: str | None = None) -> "Settings":
    """The settings file (``path``, else the default), loaded and validated; a bad one is a
    ``CommandError`` naming each bad key. Allowed but doubtful values are logged as warnings."""
    from appliance.runtime import log_advice
    from appliance.settings import SettingsError, load_valid

    try:
        settings = load_valid(path)
    except SettingsError as exc:
        raise CommandError(str(exc)) from None
    log_advice(settings)
    return settings


def load_service_settings(path: str | None = None) -> "Loaded":
    """Settings for a long-running service: the file when it is good, else the last good settings
    (:func:`appliance.settings.load_recovering`) with the problem logged once and returned in
    ``problem``: a service never refuses to start (and restarts for ever) on a broken file."""
    from appliance.runtime import log_advice
    from appliance.settings import load_recovering

    loaded = load_recovering(path)
    if loaded.problem:
        logging.getLogger("appliance.settings").error("%s", loaded.problem)
    log_advice(loaded.settings)
    return loaded


DEFERRED = ("aiohttp", "jsonschema", "dns.resolver", "urllib.request", "zigpy.ota.providers")
"""Imported by libraries at start-up for what the services never do: zigpy's OTA updates
(aiohttp, jsonschema, and zigpy's OTA providers, three of whose classes load the system's CA
certificates: ~90 ms of the Zigbee service's start; the service's zigpy configuration names no
provider, ``zigbee.application.zigpy_config``), paho's DNS SRV lookups (dnspython) and proxies
(urllib.request, used only with PySocks installed: ~0.5 MiB of the Zigbee service's heap).
Loaded on first use instead (:mod:`appliance.lazy`)."""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line; with ``only``, a command's name, that command alone (what ``main`` runs:
    the other commands' modules and what they import stay out of the process)."""
    parser = argparse.ArgumentParser(
        prog="solargw", description="Local gateway for NEP and Enecsys solar micro-inverters."
    )
    parser.add_argument("--version", action="version", version=f"solargw {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES if only is None else (only,):
        importlib.import_module(f"appliance.commands.{name}").register(subparsers)
    return parser


def command_in(argv: list[str]) -> str | None:
    """The command ``argv`` runs (its first word that is not an option: the global options take no
    value), or None when that is no command: help, ``--version``, a mistake (the full parser
    answers those)."""
    word = next((arg for arg in argv if not arg.startswith("-")), None)
    return word if word in COMMAND_MODULES else None


def main(argv: list[str] | None = None) -> int:
    from appliance.lazy import defer

    defer(*DEFERRED)
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(command_in(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except CommandError as exc:
        print(f"solargw {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `solargw ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
