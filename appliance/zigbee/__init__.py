"""Enecsys over Zigbee: the service on zigpy-znp, the emulated Z-Stack coordinator and simulated inverters."""
