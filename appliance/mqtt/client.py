"""The broker connection: paho-mqtt 2.x in its own network thread.

``connect_async`` + ``loop_start``: a broker that is down at boot is normal, paho keeps
retrying with a growing delay (``reconnect_delay_set``). The last will marks the service
``offline`` (retained) when the process dies; ``online`` (retained) is published on every
connect. Outgoing messages are bounded (``max_queued_messages_set``): a broker that stays away
costs a bounded amount of memory, and nothing is lost that matters, since the publisher
republishes every config and latest state on reconnect.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from appliance.settings import MqttSettings

log = logging.getLogger(__name__)

MAX_QUEUED = 1000
MAX_INFLIGHT = 20
KEEPALIVE = 30


class MqttConnection:
    def __init__(self, settings: MqttSettings, client_id: str, *, availability_topic: str,
                 subscriptions: tuple[str, ...] = (),
                 on_connected: Callable[[], None] = lambda: None,
                 on_message: Callable[[str, bytes], None] = lambda topic, payload: None,
                 reconnect_delay: tuple[int, int] = (1, 60)):
        """Raises ``ValueError`` / ``OSError`` for unusable TLS settings (a missing CA file)."""
        self.settings = settings
        self.availability_topic = availability_topic
        self.subscriptions = subscriptions
        self._on_connected = on_connected
        self._on_message = on_message
        self._connected = threading.Event()
        self._closing = False
        self.refused: str | None = None
        """Why the broker refused the last connection attempt (e.g. "Not authorized"), if it did."""
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=paho.MQTTv311, clean_session=True)
        client.reconnect_delay_set(*reconnect_delay)
        client.max_queued_messages_set(MAX_QUEUED)
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.will_set(availability_topic, "offline", qos=1, retain=True)
        if settings.username:
            client.username_pw_set(settings.username, settings.password or None)
        if settings.tls or settings.ca_file:
            client.tls_set(ca_certs=settings.ca_file or None)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        self.client = client

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def start(self) -> None:
        self.client.connect_async(self.settings.host, self.settings.port, keepalive=KEEPALIVE)
        self.client.loop_start()

    def publish(self, topic: str, payload: str | bytes, *, qos: int = 0, retain: bool = False) -> bool:
        """Queue a message; False when it was dropped (not connected for QoS 0, queue full)."""
        try:
            info = self.client.publish(topic, payload, qos=qos, retain=retain)
        except (ValueError, OSError) as exc:
            log.warning("mqtt: cannot publish %s: %s", topic, exc)
            return False
        return info.rc == paho.MQTT_ERR_SUCCESS

    def close(self, timeout: float = 5.0) -> None:
        """Mark the service offline (retained), then disconnect cleanly (no last will)."""
        self._closing = True
        try:
            if self.connected:
                info = self.client.publish(self.availability_topic, "offline", qos=1, retain=True)
                info.wait_for_publish(timeout)
        except (ValueError, RuntimeError, OSError) as exc:
            log.info("mqtt: could not publish offline before closing: %s", exc)
        finally:
            self.client.disconnect()
            self.client.loop_stop()
            self._connected.clear()

    # paho callbacks (its network thread)

    def _handle_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.refused = str(reason_code)
            log.warning("mqtt: %s:%s refused the connection: %s",
                        self.settings.host, self.settings.port, reason_code)
            return
        self.refused = None
        log.info("mqtt: connected to %s:%s", self.settings.host, self.settings.port)
        self._connected.set()
        client.publish(self.availability_topic, "online", qos=1, retain=True)
        for topic in self.subscriptions:
            client.subscribe(topic, qos=1)
        self._on_connected()

    def _handle_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._connected.is_set() and not self._closing:
            log.warning("mqtt: disconnected from %s:%s (%s); reconnecting",
                        self.settings.host, self.settings.port, reason_code)
        self._connected.clear()

    def _handle_message(self, client, userdata, message) -> None:
        self._on_message(message.topic, bytes(message.payload))
