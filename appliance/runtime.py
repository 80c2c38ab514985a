"""The small runtime the long-running services share (web, net, zigbee).

Three pieces, each synchronous, cheap and safe to call from any thread, so a threaded
service (web under gunicorn), a select loop (net) and an asyncio loop (zigbee) use them alike:

``SettingsFollower``: keep using the settings file as it is edited::

    follower = SettingsFollower(path, on_change)   # loads + validates now (SettingsError if bad)
    follower = SettingsFollower(path, on_change, recover=True)  # a bad file: the last good settings
    follower.check()            # one stat(); reads the file only when it changed or a reload was asked
    follower.request_reload()   # from a SIGHUP handler: only sets a flag, the next check() reads
    follower.settings           # the last good settings;  follower.error: why the file is not in use
    follower.adopt(settings)    # this process wrote the file itself: use these, no reload

  A file that does not load or validate changes nothing: the last good settings stay, the
  reason is logged once per distinct error and kept in ``error``. New settings are taken
  into use by setting the process's time zone (``[system] timezone``), then calling
  ``on_change(old, new)``. ``adjust`` rewrites freshly loaded settings before they are
  validated (command-line overrides such as ``--interface`` or ``--device``). Every file it
  accepts is also kept as the last good copy (:mod:`appliance.settings.recovery`), which a
  service started on a broken file runs on (``recover=True``: never a restart loop).

``PublisherHolder``: the service's MQTT publisher, itself a ``Publisher`` that never raises::

    holder = PublisherHolder(lambda s: make_publisher(s, "web", store), settings)
    holder.get()                 # made on first use, in this process (after gunicorn's fork)
    holder.update(new_settings)  # [mqtt] changed: the new publisher first, the old one closed in a thread
    holder.publish(recorded); holder.publish_status(status); holder.remove(serial)
    holder.close()

``StatusReporter``: a component's status for the status page (and MQTT)::

    reporter = StatusReporter("net", store, heartbeat=60)   # store: a Store or a callable giving one
    reporter.report(status)      # written when it changed or the heartbeat is due
    reporter.force()             # the next report is written (a new broker must hear it)

In an asyncio service (zigbee): ``loop.add_signal_handler(SIGHUP, follower.request_reload)``
and a task that calls ``follower.check()`` every couple of seconds; ``on_change`` runs on
the loop (keep it short, or hand long work to a task). ``holder.update`` makes the new
client synchronously (no network wait: it connects in its own thread), and may be run
through ``asyncio.to_thread`` to keep even that off the loop. ``reporter.report`` does one
small store write: the same call the service makes today.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from appliance.settings import (
    Settings,
    SettingsError,
    advice,
    apply_timezone,
    describe,
    file_fingerprint,
    keep_last_good,
    load_recovering,
)
from appliance.settings.recovery import load_checked

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """A service cannot start; the message says why, in one line."""


def log_advice(settings: Settings, already: set[str] | None = None) -> None:
    """Warn about values that are allowed but will not work as expected (each text once per ``already``)."""
    for key, text in advice(settings).items():
        line = describe({key: text})
        if already is None or line not in already:
            log.warning("%s", line)
            if already is not None:
                already.add(line)


class SettingsFollower:
    """The settings file as it is now, or the last good version of it."""

    def __init__(self, path: Path | str | None, on_change: Callable[[Settings, Settings], None] | None = None,
                 *, settings: Settings | None = None, adjust: Callable[[Settings], Settings] | None = None,
                 env: Mapping[str, str] | None = None, recover: bool = False, error: str = "") -> None:
        """``settings``: the settings in use now (``error``: why they are not the file's), else the
        file is loaded and validated here: a bad one raises ``SettingsError``, or with ``recover``
        gives the last good settings (:func:`appliance.settings.load_recovering`) and ``error``.
        ``path`` None: nothing to follow (an app built in a test)."""
        self.path = Path(path) if path is not None else None
        self.on_change = on_change
        self.adjust = adjust
        self.env = env
        self.error = error
        self._lock = threading.RLock()
        self._reload_reason: str | None = None
        self._advised: set[str] = set()
        self._fingerprint = file_fingerprint(self.path) if self.path is not None else None
        self._had_file = self._fingerprint is not None
        if settings is None and recover:
            loaded = load_recovering(self.path, self.env, self.adjust)
            settings, self.error = loaded.settings, loaded.problem
            if self.error:
                log.error("%s", self.error)
        self.settings = settings if settings is not None else self._load()
        log_advice(self.settings, self._advised)
        apply_timezone(self.settings)

    def _load(self) -> Settings:
        loaded = load_checked(self.path, os.environ if self.env is None else self.env, self.adjust)
        keep_last_good(self.path, loaded.data)
        return loaded.settings

    def request_reload(self, reason: str = "SIGHUP") -> None:
        """Read the file at the next ``check()`` even if it looks unchanged (safe in a signal handler)."""
        self._reload_reason = reason

    def check(self) -> bool:
        """Take the file into use if it changed (or a reload was asked); True when it was read."""
        if self.path is None:
            return False
        if self._reload_reason is None and file_fingerprint(self.path) == self._fingerprint:
            return False  # the common case, without the lock (a request thread, every loop tick)
        with self._lock:
            reason, self._reload_reason = self._reload_reason, None
            fingerprint = file_fingerprint(self.path)
            if reason is None and fingerprint == self._fingerprint:
                return False
            if reason is not None:
                log.info("%s: reloading the settings", reason)
            self._fingerprint = fingerprint
            try:
                if fingerprint is None and self._had_file:  # gone (``save`` never leaves it so): not "defaults"
                    raise SettingsError(f"{self.path}: the settings file is missing")
                self._had_file = self._had_file or fingerprint is not None
                new = self._load()
            except SettingsError as exc:
                self._fail(str(exc))
                return True
            except Exception as exc:  # noqa: BLE001 - whatever went wrong, the service runs on
                log.exception("while reading %s", self.path)
                self._fail(f"{self.path}: unexpected error: {exc!r}")
                return True
            if self.error:
                log.info("%s: settings accepted again", self.path)
                self.error = ""
            self._use(new)
            return True

    def _fail(self, message: str) -> None:
        if message != self.error:
            where = "" if message.startswith(str(self.path)) else f"{self.path}: "
            log.error("%s%s; keeping the settings in use", where, message)
        self.error = message

    def adopt(self, settings: Settings) -> None:
        """Use ``settings`` now: this process has just written them to the file (or has no file)."""
        with self._lock:
            if self.path is not None:
                self._fingerprint = file_fingerprint(self.path)
                try:
                    keep_last_good(self.path, self.path.read_bytes())  # written after passing every rule
                except OSError:
                    pass
            self.error = ""
            self._use(settings)

    def _use(self, new: Settings) -> None:
        old, self.settings = self.settings, new
        if new == old:
            return
        log_advice(new, self._advised)
        apply_timezone(new)
        if self.on_change is not None:
            try:
                self.on_change(old, new)
            except Exception:  # the caller (a request, a loop tick) must not fail for it
                log.exception("while applying the new settings")


def _close_quietly(thing: Any, what: str) -> None:
    try:
        thing.close()
    except Exception:  # a broken old client must not block anything
        log.exception("closing the %s", what)


class PublisherHolder:
    """One service's MQTT publisher (or None when MQTT is off or cannot start), made lazily.

    It is a ``Publisher`` itself (``publish``, ``publish_status``, ``remove``, ``close``):
    each passes to the current publisher, if any, and never raises.
    """

    def __init__(self, make: Callable[[Settings], Any], settings: Settings, *, follow_settings: bool = True) -> None:
        """``make(settings)`` returns a started publisher or None; ``follow_settings`` False keeps
        the first one whatever ``update`` is given (a publisher injected by a test)."""
        self.make = make
        self.settings = settings
        self.follow_settings = follow_settings
        self._publisher: Any = None
        self._made = False
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def get(self) -> Any:
        """The publisher, made on first use in this process; None when there is none."""
        with self._lock:
            if self._pid != os.getpid():  # a forked child must not use its parent's sockets and threads
                self._pid, self._publisher, self._made = os.getpid(), None, False
            if not self._made:
                self._made = True
                try:
                    self._publisher = self.make(self.settings)
                except Exception:  # a broken MQTT setup must not stop the service
                    log.exception("cannot start the MQTT publisher; readings are stored only")
                    self._publisher = None
            return self._publisher

    def update(self, settings: Settings) -> bool:
        """Follow ``settings``: when ``[mqtt]`` changed, the new publisher is made first (if the old
        one was in use), then the old one is closed on a thread of its own. True when swapped."""
        with self._lock:
            old_settings, self.settings = self.settings, settings
            if not self.follow_settings or old_settings.mqtt == settings.mqtt:
                return False
            old, was_made = self._publisher, self._made and self._pid == os.getpid()
            self._publisher, self._made = None, False
        if was_made:
            log.info("the MQTT settings changed: connecting to %s:%d", settings.mqtt.host, settings.mqtt.port)
            self.get()
        if old is not None and was_made:
            threading.Thread(target=_close_quietly, args=(old, "old MQTT publisher"),
                             name="mqtt-close-old", daemon=True).start()
        return True

    def _call(self, method: str, *args: Any) -> None:
        publisher = self.get()
        if publisher is None:
            return
        try:
            getattr(publisher, method)(*args)
        except Exception:  # a publisher bug must not reach the service
            log.exception("mqtt: %s failed", method)

    def publish(self, recorded: Any) -> None:
        self._call("publish", recorded)

    def publish_status(self, status: Mapping[str, Any]) -> None:
        self._call("publish_status", status)

    def remove(self, serial: str) -> None:
        self._call("remove", serial)

    def close(self) -> None:
        with self._lock:
            publisher, self._publisher = self._publisher, None
            self._made = True  # closed for good: nothing is made again
        if publisher is not None:
            _close_quietly(publisher, "MQTT publisher")


class StatusReporter:
    """Writes a component's status when it changed or when the heartbeat is due; never raises."""

    def __init__(self, component: str, store: Any = None, *, publish: Callable[[dict[str, Any]], None] | None = None,
                 heartbeat: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        """``store``: a Store (``set_status``), or a callable returning the one to use now, or None;
        ``publish``: also called with each written status (e.g. towards MQTT)."""
        self.component = component
        self.store = store
        self.publish = publish
        self.heartbeat = heartbeat
        self.clock = clock
        self._last: dict[str, Any] | None = None
        self._last_at = 0.0
        self._failures: dict[str, str] = {}

    def force(self) -> None:
        """Write the next status even if it did not change."""
        self._last = None

    def report(self, status: Mapping[str, Any]) -> bool:
        """True when ``status`` was written (every sink took it)."""
        snapshot = dict(status)
        now = self.clock()
        if snapshot == self._last and now - self._last_at < self.heartbeat:
            return False
        written = True
        if self.store is not None:
            written = self._write("store", self._store_write, snapshot)
        if self.publish is not None:
            written = self._write("publish", self.publish, snapshot) and written
        if written:
            self._last, self._last_at = snapshot, now
        return written

    def _store_write(self, snapshot: dict[str, Any]) -> None:
        store = self.store() if callable(self.store) else self.store
        store.set_status(self.component, snapshot)

    def _write(self, sink: str, write: Callable[[dict[str, Any]], None], snapshot: dict[str, Any]) -> bool:
        try:
            write(snapshot)
        except Exception as exc:  # the status is for display: the service goes on without it
            if self._failures.get(sink) != str(exc):
                log.warning("cannot write the %s status (%s): %s", self.component, sink, exc)
                self._failures[sink] = str(exc)
            return False
        self._failures.pop(sink, None)
        return True
