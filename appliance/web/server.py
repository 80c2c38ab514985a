"""Run the collector app under gunicorn: one worker, gthread threads.

One worker because the app keeps per-process state that must not be split
(the MQTT publisher's connection, the relay queue, the live-event cursor);
threads give concurrency, and SQLite in WAL mode serialises the writes anyway.
The app is built in the worker (no ``preload_app``), so every network client
is created after the fork.
"""
from __future__ import annotations

import socket
import sys
from typing import Any, Callable

from gunicorn.app.base import BaseApplication

from appliance.runtime import ServiceError
from appliance.settings import Settings


def format_bind(host: str, port: int) -> str:
    """gunicorn's bind syntax (IPv6 literals in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listening_urls(listeners) -> list[str]:
    urls = []
    for listener in listeners:
        address = listener.getsockname()
        if isinstance(address, tuple):
            host, port = address[0], address[1]
            host = f"[{host}]" if ":" in host else host
            urls.append(f"http://{host}:{port}/")
        else:
            urls.append(f"unix:{address}")
    return urls


class WebServer(BaseApplication):
    """gunicorn in-process: ``WebServer(settings, binds).run()`` blocks until stopped."""

    def __init__(self, settings: Settings, binds: list[str] | None = None,
                 on_ready: Callable[[list[str]], None] | None = None, options: dict[str, Any] | None = None):
        self.settings = settings
        self.binds = binds or [format_bind(settings.web.listen_addr, settings.web.port)]
        self.on_ready = on_ready
        self.options = options or {}
        super().__init__()

    def load_config(self) -> None:
        config = {
            "bind": self.binds,
            "workers": 1,
            "worker_class": "gthread",
            "threads": max(1, self.settings.web.threads),
            "timeout": 60,
            "graceful_timeout": 10,
            "keepalive": 5,
            "proc_name": "solargw-web",
            "errorlog": "-",
            "loglevel": "info",
            "forwarded_allow_ips": "",
            "control_socket_disable": True,  # gunicorn 27+: no shared ~/.gunicorn/gunicorn.ctl
            "when_ready": self._when_ready,
            "post_worker_init": _start_services,
            "worker_exit": _close_services,
            **self.options,
        }
        for key, value in config.items():
            if key in self.cfg.settings:  # control_socket_disable exists from gunicorn 27 on
                self.cfg.set(key, value)

    def _when_ready(self, arbiter) -> None:
        urls = listening_urls(arbiter.LISTENERS)
        if self.on_ready is not None:
            self.on_ready(urls)

    def load(self):
        from appliance.web.app import create_app

        return create_app(self.settings)


def _start_services(worker) -> None:
    """The worker's MQTT publisher connects now, not at the first inverter post: Home Assistant
    hears the appliance's status (inverters, Wi-Fi, gateway) even where no NEP inverter posts."""
    services = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("solargw")
    if services is not None:
        services.publisher  # noqa: B018 - made on first use


def _close_services(_arbiter, worker) -> None:
    """Close the MQTT publisher and the relay as the worker exits (its last will stays unsent), and
    the store (its last group commit: what waits in RAM reaches the card before a reboot)."""
    app = getattr(worker, "wsgi", None)
    services = getattr(app, "extensions", {}).get("solargw")
    if services is not None:
        services.close()
        services.store.close()


def check_bind(bind: str) -> str | None:
    """A clear reason why ``bind`` cannot be listened on, or None when it can."""
    host, _, port_text = bind.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        port = int(port_text)
    except ValueError:
        return f"{bind!r} is not HOST:PORT"
    if not 0 <= port < 65536:
        return f"{bind!r}: {port} is not a port number"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except PermissionError:
        return f"cannot listen on {bind}: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    except OSError as exc:
        return f"cannot listen on {bind}: {exc.strerror or exc}"
    return None


def print_ready(urls: list[str]) -> None:
    for url in urls:
        print(f"solargw web: listening on {url}", flush=True)
    sys.stdout.flush()


def serve(settings: Settings, binds: list[str] | None = None) -> int:
    """``solargw web``: check that every bind can listen and that the store opens (a
    ``ServiceError`` in one line, rather than in gunicorn's worker), then serve until stopped."""
    from appliance.store import Store, StoreError

    binds = binds or [format_bind(settings.web.listen_addr, settings.web.port)]
    for bind in binds:
        problem = check_bind(bind)
        if problem:
            raise ServiceError(problem)
    try:
        Store.from_settings(settings).close()
    except StoreError as exc:
        raise ServiceError(str(exc)) from None
    try:
        WebServer(settings, binds, on_ready=print_ready).run()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
