"""An emulated Z-Stack 3.x coordinator stick (``solargw simulate enecsys``): zigpy-znp drives it over TCP.

- ``coordinator``: the stack (formation, joins, AF) and the ZNP commands it answers;
- ``nv``: its non-volatile memory;
- ``link``: its serial link (ZNP transport frames over TCP).
"""
