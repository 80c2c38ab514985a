"""solargw: a local gateway for orphaned NEP (Wi-Fi) and Enecsys (Zigbee) solar micro-inverters."""

__version__ = "0.1.0"
