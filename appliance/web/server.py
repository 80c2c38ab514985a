"""Run the collector: the front receiver on the web port, gunicorn + Flask behind it.

- ``solargw web`` (gunicorn's arbiter) binds the public sockets (``[web] listen_addr``/``port``
  or ``--bind``) itself, so a port that cannot be had is one clear line before anything
  starts, and the sockets outlive a worker that dies (connections wait in the backlog).
- One gunicorn worker (gthread threads) serves the Flask app on a private unix socket in a
  directory of its own (mode 0700). The app is built in the worker (no ``preload_app``), so
  every network client is made after the fork. One worker because the app keeps per-process
  state that must not be split (the MQTT publisher's connection, the relay queue, the
  live-event cursor); threads give concurrency, and SQLite serialises the writes anyway.
- After the fork the worker starts one asyncio loop on a thread of its own
  (:class:`LoopThread`) with the listeners of :func:`start_listeners`: today the front
  receiver (:mod:`appliance.web.receiver`), which answers inverters itself and passes every
  other request to Flask. They share the worker's :class:`~appliance.web.services.Services`.

Another asyncio listener that should share the receiver's loop is one more entry in
:func:`start_listeners`: an object started on the loop (``await thing.start(...)``) and closed
there (``await thing.close()``). (The Enecsys gateway's listener, :mod:`appliance.gateway`,
runs a loop of its own, started by ``Services.start_gateway``.)
"""
from __future__ import annotations

import asyncio
import os
import resource
import shutil
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

from gunicorn.app.base import BaseApplication

from appliance.runtime import ServiceError
from appliance.settings import Settings
from appliance.web import http1

SETTINGS_CHECK_SECONDS = 1.0
"""How often inverter reports look whether the settings file changed (the UI's requests do every time)."""
FILE_LIMIT = 8192
"""Open files the service asks for (soft limit, up to the hard one): idle connections cost one each."""


def format_bind(host: str, port: int) -> str:
    """gunicorn's bind syntax (IPv6 literals in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listening_urls(sockets: list[socket.socket]) -> list[str]:
    urls = []
    for sock in sockets:
        host, port = sock.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        urls.append(f"http://{host}:{port}/")
    return urls


def open_listener(bind: str) -> socket.socket:
    """A listening socket for ``HOST:PORT``; ``ServiceError`` says why it cannot be had."""
    host, _, port_text = bind.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        port = int(port_text)
    except ValueError:
        raise ServiceError(f"{bind!r} is not HOST:PORT") from None
    if not 0 <= port < 65536:
        raise ServiceError(f"{bind!r}: {port} is not a port number")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except PermissionError:
        sock.close()
        raise ServiceError(f"cannot listen on {bind}: permission denied "
                           "(ports below 1024 need root or CAP_NET_BIND_SERVICE)") from None
    except OSError as exc:
        sock.close()
        raise ServiceError(f"cannot listen on {bind}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


class LoopThread:
    """An asyncio loop on a daemon thread of its own; :meth:`run` runs a coroutine on it from
    another thread and waits for the result.

    The loop is uvloop's (libuv): every inverter report is a new connection, and asyncio's own
    loop spends about 0.09 ms of CPU more per connection (its accept task, transport, handles
    and selector bookkeeping, all in Python) than the whole of a bare stdlib server (issue 15,
    ``python -m bench ingest``: the receiver alone 0.17 ms per report, 0.08 with uvloop;
    the worker's PSS about 2 MiB more)."""

    def __init__(self, name: str = "solargw-front") -> None:
        import uvloop

        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coroutine: Any, timeout: float = 15.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)


class Listeners:
    """What :func:`start_listeners` started in a worker, stopped together by :meth:`close`."""

    def __init__(self, thread: LoopThread, things: list[Any]) -> None:
        self.thread = thread
        self.things = things

    def close(self) -> None:
        for thing in reversed(self.things):
            try:
                self.thread.run(thing.close(), timeout=10.0)
            except Exception:  # noqa: BLE001 - the worker is exiting: close the rest
                pass
        self.thread.stop()


def start_listeners(services: Any, public: list[socket.socket], upstream: str | None) -> Listeners:
    """Start the worker's event-loop listeners (after the fork): the front receiver on the public
    sockets, passing what is not an inverter's to the UI server at ``upstream``."""
    from appliance.web.ingest import accept_all
    from appliance.web.receiver import Receiver

    checked = [0.0]

    def ingest(posts: list[Any]) -> None:  # on the ingest thread: the reports queued, in one go
        if posts[0].received - checked[0] >= SETTINGS_CHECK_SECONDS:  # a stat() at most once a second
            checked[0] = posts[0].received
            services.follow_settings_file()
        accept_all(services, posts)

    thread = LoopThread()
    receiver = Receiver(ingest, upstream)
    thread.run(receiver.start(public))
    return Listeners(thread, [receiver])


def trust_front(wsgi_app: Callable) -> Callable:
    """WSGI middleware: a request that came over the private unix socket (from the receiver) has
    the client's address in ``X-Solargw-Peer``; nothing else can reach that socket."""
    peer_key = "HTTP_" + http1.PEER_HEADER.upper().replace("-", "_")
    port_key = "HTTP_" + http1.PEER_PORT_HEADER.upper().replace("-", "_")
    server_port_key = "HTTP_" + http1.SERVER_PORT_HEADER.upper().replace("-", "_")

    def app(environ: dict, start_response: Callable) -> Any:
        sock = environ.get("gunicorn.socket")
        if sock is not None and sock.family == socket.AF_UNIX and peer_key in environ:
            environ["REMOTE_ADDR"] = environ.pop(peer_key)
            environ["REMOTE_PORT"] = environ.pop(port_key, "")
            environ["SERVER_PORT"] = environ.pop(server_port_key, environ.get("SERVER_PORT", ""))
        return wsgi_app(environ, start_response)

    return app


class WebServer(BaseApplication):
    """gunicorn in-process: ``WebServer(settings, sockets).run()`` blocks until stopped."""

    def __init__(self, settings: Settings, sockets: list[socket.socket], upstream: str,
                 on_ready: Callable[[list[str]], None] | None = None, settings_error: str = "",
                 options: dict[str, Any] | None = None):
        self.settings = settings
        self.public = sockets
        self.upstream = upstream
        self.on_ready = on_ready
        self.settings_error = settings_error
        self.options = options or {}
        super().__init__()

    def load_config(self) -> None:
        config = {
            "bind": [f"unix:{self.upstream}"],
            "workers": 1,
            "worker_class": "gthread",
            "threads": max(1, self.settings.web.threads),
            "timeout": 60,
            "graceful_timeout": 10,
            "keepalive": 0,  # the receiver asks for one request per connection
            "proc_name": "solargw-web",
            "errorlog": "-",
            "loglevel": "info",
            "forwarded_allow_ips": "",
            "control_socket_disable": True,  # gunicorn 27+: no shared ~/.gunicorn/gunicorn.ctl
            "when_ready": self._when_ready,
            "post_worker_init": self._post_worker_init,
            "worker_exit": _close_worker,
            **self.options,
        }
        for key, value in config.items():
            if key in self.cfg.settings:  # control_socket_disable exists from gunicorn 27 on
                self.cfg.set(key, value)

    def _when_ready(self, _arbiter) -> None:
        if self.on_ready is not None:
            self.on_ready(listening_urls(self.public))

    def _post_worker_init(self, worker) -> None:
        services = worker.wsgi.extensions["solargw"]
        services.publisher  # noqa: B018 - the MQTT publisher connects now, not at the first inverter post
        worker.solargw_listeners = start_listeners(services, self.public, self.upstream)

    def load(self):
        from appliance.web.app import create_app

        app = create_app(self.settings, settings_error=self.settings_error)
        app.wsgi_app = trust_front(app.wsgi_app)
        return app


def _close_worker(_arbiter, worker) -> None:
    """Stop the listeners (queued reports are stored), then close the MQTT publisher and the relay
    (its last will stays unsent), and the store (its last group commit: what waits in RAM reaches
    the card before a reboot)."""
    listeners = getattr(worker, "solargw_listeners", None)
    if listeners is not None:
        listeners.close()
    app = getattr(worker, "wsgi", None)
    services = getattr(app, "extensions", {}).get("solargw")
    if services is not None:
        services.close()
        services.store.close()


def raise_file_limit(wanted: int = FILE_LIMIT) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def print_ready(urls: list[str]) -> None:
    for url in urls:
        print(f"solargw web: listening on {url}", flush=True)
    sys.stdout.flush()


def serve(settings: Settings, binds: list[str] | None = None, settings_error: str = "") -> int:
    """``solargw web``: listen on every bind and check that the store opens (a ``ServiceError``
    in one line, rather than in gunicorn's worker), then serve until stopped. ``settings_error``:
    why the settings in use are not the file's (shown on the status page)."""
    from appliance.store import Store, StoreError

    binds = binds or [format_bind(settings.web.listen_addr, settings.web.port)]
    raise_file_limit()
    sockets: list[socket.socket] = []
    try:
        for bind in binds:
            sockets.append(open_listener(bind))
        try:
            Store.from_settings(settings).close()
        except StoreError as exc:
            raise ServiceError(str(exc)) from None
        private = Path(tempfile.mkdtemp(prefix="solargw-web-"))
        arbiter = os.getpid()
        try:
            WebServer(settings, sockets, str(private / "ui.sock"), on_ready=print_ready,
                      settings_error=settings_error).run()
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            if os.getpid() == arbiter:  # a worker leaves through here too (gunicorn's SystemExit)
                shutil.rmtree(private, ignore_errors=True)
    finally:
        for sock in sockets:
            sock.close()
    return 0
