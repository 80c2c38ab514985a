"""Enecsys over Zigbee, the ``solargw zigbee`` service.

- ``service``: the service loop (connect, form, stack profile, permit-join, reconnect) and its status;
- ``application``: zigpy-znp's application class for the Enecsys network, and its zigpy config;
- ``frames``: what to do with each Enecsys frame (no zigpy);
- ``port``: finding the coordinator stick's serial port;
- ``telemetry``: the seed-compatible ``telemetry.json``.
"""
