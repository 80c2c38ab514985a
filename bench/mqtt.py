"""MQTT publisher figures: ``.venv/bin/python -m bench.mqtt [readings]``.

- building one inverter's discovery config and state (pure, per call);
- what ``publish()`` costs its caller (the ingest path), per call;
- readings per second from ``publish()`` to a real subscriber on a local mosquitto
  (started with ``tests/support/brokers.py``), and the publisher's resident memory growth.
"""
from __future__ import annotations

import dataclasses
import resource
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from appliance.mqtt import discovery as ha
from appliance.mqtt import make_publisher
from appliance.mqtt.publisher import _dumps
from appliance.protocols import enecsys
from appliance.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.brokers import mosquitto  # noqa: E402

SERIAL = 100095471


def recorded(counter: int, when: float) -> SimpleNamespace:
    """A ``store.Recorded`` look-alike (the store is benchmarked elsewhere)."""
    frame = enecsys.encode_report(SERIAL, counter % 60000, 0, 1.3, 44 + counter % 50, 0.846, 49, 243, 32,
                                  1_347_515 + counter)
    reading = enecsys.decode(frame, received_at=when)
    info = SimpleNamespace(name="", model="", firmware="")
    return SimpleNamespace(reading=reading, inverter=info, lifetime_wh=1_347_515.0 + counter,
                           energy_today_wh=float(counter))


def per_call(function, seconds: float = 1.0) -> float:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            function()
        count += 100
    return (time.perf_counter() - start) / count * 1e6


def main(argv: list[str]) -> int:
    total = int(argv[0]) if argv else 5000
    topics = ha.Topics("homeassistant", "solargw", "zigbee")
    sample = recorded(1, time.time())
    identity = ha.InverterIdentity("enecsys", str(SERIAL))
    keys = ha.inverter_entity_keys(sample.reading.fields)
    config_us = per_call(lambda: _dumps(ha.inverter_discovery(
        identity, keys, topics, appliance="solargw_solargw", url="http://solargw.local/")[0][1]))
    state_us = per_call(lambda: _dumps(ha.inverter_state(
        keys, sample.reading.fields, lifetime_wh=1.0, energy_today_wh=1.0, last_seen=time.time())))
    print(f"discovery config build + JSON   {config_us:8.1f} us")
    print(f"state build + JSON              {state_us:8.1f} us")

    with mosquitto() as broker:
        base = Settings()
        settings = dataclasses.replace(base, mqtt=broker.mqtt_settings())
        readings = [recorded(i, time.time()) for i in range(total)]
        last_state = f"solargw/inverter/{SERIAL}/state"
        with broker.subscribe(last_state) as log:
            publisher = make_publisher(settings, "zigbee", config_settle=3600)
            assert publisher is not None and publisher.connection.wait_connected(10)
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            start = time.perf_counter()
            for item in readings:
                publisher.publish(item)
            caller = time.perf_counter() - start
            marker = f'"lifetime_wh":{1_347_515.0 + total - 1}'.encode()
            log.wait(last_state, lambda m: marker in m.payload, timeout=120)
            elapsed = time.perf_counter() - start
            received = len(log.on(last_state))
            rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            publisher.close()
    print(f"publish() cost to the caller    {caller / total * 1e6:8.1f} us per reading")
    print(f"to a real subscriber            {total / elapsed:8,.0f} readings/s "
          f"({received} of {total} states received, {elapsed:.2f} s)")
    print(f"max RSS growth during the burst {(rss_after - rss_before) / 1024:8.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
