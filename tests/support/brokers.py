"""Real MQTT brokers for tests: mosquitto and nats-server on random loopback ports.

    with mosquitto() as broker:                 # plain, anonymous
        broker.port
    with mosquitto(password=("user", "pw")) as broker: ...
    with mosquitto(tls=True) as broker:         # broker.ca_file verifies its certificate
        ...
    with nats() as broker:                      # JetStream + its MQTT listener on broker.port
        ...
    with broker.subscribe("solargw/#") as log:  # a real paho subscriber
        log.wait("solargw/web/availability", lambda m: m.payload == b"online")
    broker.publish("homeassistant/status", "online")  # as another client

``broker.stop()`` / ``broker.start()`` restart the same broker on the same port. Each
broker lives in its own temporary directory, removed on exit.
"""
from __future__ import annotations

import contextlib
import datetime
import getpass
import ipaddress
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from support import processes
from support.ports import HOST, free_port
from support.waiting import wait_for

def _can_connect(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool
    qos: int
    received: float

    @property
    def text(self) -> str:
        return self.payload.decode()


class MessageLog:
    """Every message a real paho subscriber received, in order, with waits."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._cond = threading.Condition()

    def add(self, message: Message) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def on(self, topic: str) -> list[Message]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def last(self, topic: str) -> Message | None:
        found = self.on(topic)
        return found[-1] if found else None

    def topics(self) -> set[str]:
        with self._cond:
            return {m.topic for m in self.messages}

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()

    def wait(self, topic: str, predicate: Callable[[Message], bool] = lambda m: True,
             timeout: float = 10.0, after: int = 0) -> Message:
        """The first message on ``topic`` (index >= ``after``) that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for message in self.messages[after:]:
                    if message.topic == topic and predicate(message):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [m.payload[:80] for m in self.messages if m.topic == topic]
                    raise TimeoutError(f"no matching message on {topic} within {timeout}s; saw {seen}")
                self._cond.wait(remaining)

    def mark(self) -> int:
        with self._cond:
            return len(self.messages)


@dataclass
class Broker:
    kind: str
    port: int
    workdir: Path
    command: list[str]
    host: str = HOST
    ca_file: str = ""
    username: str = ""
    password: str = ""
    process: subprocess.Popen | None = field(default=None, repr=False)
    ready_check: Callable[["Broker"], bool] | None = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return bool(self.ca_file)

    def start(self, timeout: float = 20.0) -> None:
        log = open(self.workdir / f"{self.kind}.log", "ab")
        self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                        cwd=self.workdir)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.process.returncode}:\n{self.log()}")
            if _can_connect(self.port) and (self.ready_check is None or self.ready_check(self)):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{self.kind} not ready on port {self.port}:\n{self.log()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is None:
            return
        processes.stop(self.process)
        self.process = None
        wait_for(lambda: not _can_connect(self.port), 10, f"{self.kind} to close port {self.port}")

    def log(self) -> str:
        path = self.workdir / f"{self.kind}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def client(self, client_id: str = "") -> paho.Client:
        """A paho client configured for this broker (not yet connected)."""
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=paho.MQTTv311)
        if self.ca_file:
            client.tls_set(ca_certs=self.ca_file)
        if self.username:
            client.username_pw_set(self.username, self.password)
        return client

    def publish(self, topic: str, payload: str, client_id: str = "home-assistant") -> None:
        """Publish one QoS 1 message as another client would (Home Assistant's ``online``, say)."""
        client = self.client(client_id)
        client.connect(self.host, self.port)
        client.loop_start()
        try:
            client.publish(topic, payload, qos=1).wait_for_publish(5)
        finally:
            client.disconnect()
            client.loop_stop()

    def mqtt_settings(self, **overrides):
        """An ``appliance.settings.MqttSettings`` pointing at this broker."""
        from appliance.settings import MqttSettings

        values = dict(host=self.host, port=self.port, tls=self.tls, ca_file=self.ca_file,
                      username=self.username, password=self.password)
        values.update(overrides)
        return MqttSettings(**values)

    @contextlib.contextmanager
    def subscribe(self, *topics: str, timeout: float = 10.0) -> Iterator[MessageLog]:
        """A real subscriber on ``topics`` (default ``#``); yields its ``MessageLog``."""
        topics = topics or ("#",)
        log = MessageLog()
        subscribed = threading.Event()
        client = self.client(f"test-subscriber-{time.monotonic_ns()}")

        def on_connect(client, userdata, flags, reason_code, properties):
            client.subscribe([(t, 1) for t in topics])

        def on_subscribe(client, userdata, mid, reason_codes, properties):
            subscribed.set()

        def on_message(client, userdata, msg):
            log.add(Message(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos, time.time()))

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.connect(self.host, self.port, keepalive=30)
        client.loop_start()
        try:
            if not subscribed.wait(timeout):
                raise TimeoutError(f"subscriber could not subscribe to {topics} on {self.kind}")
            yield log
        finally:
            client.disconnect()
            client.loop_stop()


def make_certificates(directory: Path, hostname: str = "localhost") -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for ``hostname`` and 127.0.0.1.

    Returns ``(ca_file, cert_file, key_file)``.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    valid = dict(not_valid_before=now - datetime.timedelta(minutes=5),
                 not_valid_after=now + datetime.timedelta(days=2))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "solargw test CA")])
    ca_cert = (
        x509.CertificateBuilder(subject_name=ca_name, issuer_name=ca_name,
                                public_key=ca_key.public_key(),
                                serial_number=x509.random_serial_number(), **valid)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder(subject_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]),
                                issuer_name=ca_name, public_key=key.public_key(),
                                serial_number=x509.random_serial_number(), **valid)
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return ca_file, cert_file, key_file


@contextlib.contextmanager
def mosquitto(*, tls: bool = False, password: tuple[str, str] | None = None,
              persistence: bool = False) -> Iterator[Broker]:
    """A mosquitto on a random loopback port; ``tls`` and ``password`` may be combined."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        raise RuntimeError("mosquitto is not installed (run `make deps`)")
    with tempfile.TemporaryDirectory(prefix="solargw-mosquitto-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        lines = [f"listener {port} {HOST}", "log_dest stderr", "log_type error", "log_type warning",
                 "log_type notice", f"persistence {'true' if persistence else 'false'}",
                 f"persistence_location {workdir}/",
                 # mosquitto started as root drops to user "mosquitto", who cannot read the temp dir
                 f"user {getpass.getuser()}"]
        broker = Broker("mosquitto", port, workdir, [binary, "-c", str(workdir / "mosquitto.conf")])
        if tls:
            ca_file, cert_file, key_file = make_certificates(workdir)
            lines += [f"cafile {ca_file}", f"certfile {cert_file}", f"keyfile {key_file}"]
            broker.ca_file = str(ca_file)
        if password:
            user, secret = password
            subprocess.run(["mosquitto_passwd", "-b", "-c", str(workdir / "passwd"), user, secret],
                           check=True, capture_output=True)
            (workdir / "passwd").chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {workdir / 'passwd'}"]
            broker.username, broker.password = user, secret
        else:
            lines.append("allow_anonymous true")
        (workdir / "mosquitto.conf").write_text("\n".join(lines) + "\n")
        broker.ready_check = _mqtt_handshake if tls else None
        broker.start()
        try:
            yield broker
        finally:
            broker.stop()


def _mqtt_handshake(broker: Broker) -> bool:
    """True once a real MQTT CONNECT succeeds (a TCP accept is not enough for nats or TLS)."""
    connected = threading.Event()
    client = broker.client(f"test-probe-{time.monotonic_ns()}")
    client.on_connect = lambda c, u, f, rc, p: (not rc.is_failure) and connected.set()
    try:
        client.connect(broker.host, broker.port, keepalive=10)
    except OSError:
        return False
    client.loop_start()
    try:
        return connected.wait(2)
    finally:
        client.disconnect()
        client.loop_stop()


@contextlib.contextmanager
def nats() -> Iterator[Broker]:
    """nats-server with JetStream and its MQTT listener; ``broker.port`` is the MQTT port.

    nats' MQTT needs a ``server_name`` and JetStream (retained messages and QoS 1 sessions
    live in streams). It has no QoS 2.
    """
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not Path(binary).exists():
        raise RuntimeError("nats-server is not installed (run `make deps`)")
    with tempfile.TemporaryDirectory(prefix="solargw-nats-") as tmp:
        workdir = Path(tmp)
        nats_port, mqtt_port = free_port(), free_port()
        (workdir / "nats.conf").write_text(
            f"listen: {HOST}:{nats_port}\n"
            "server_name: solargw_test\n"
            f"jetstream {{\n  store_dir: \"{workdir / 'jetstream'}\"\n}}\n"
            f"mqtt {{\n  listen: {HOST}:{mqtt_port}\n}}\n"
        )
        broker = Broker("nats", mqtt_port, workdir, [binary, "-c", str(workdir / "nats.conf")],
                        ready_check=_mqtt_handshake)
        broker.start(timeout=30)
        try:
            yield broker
        finally:
            broker.stop()
