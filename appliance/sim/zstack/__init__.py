"""An emulated Z-Stack 3.x coordinator stick (``solargw simulate enecsys``): zigpy-znp drives it over TCP.

- ``coordinator``: the stack (formation, joins, AF) and the ZNP commands it answers;
- ``network``: who is joined, at which short address, through which parent;
- ``air``: the radio between it and the devices (delay, loss, APS acks and retries);
- ``nv``: its non-volatile memory;
- ``link``: its serial link (ZNP transport frames over TCP).
"""
