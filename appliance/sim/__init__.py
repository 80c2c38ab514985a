"""Everything simulated, for the demo, the tests and the benchmarks (no hardware needed).

- ``sun``: the one day curve and simulated clock every simulator shares;
- ``nep_inverters``: NEP inverters posting real packets over HTTP;
- ``zstack``: an emulated Z-Stack coordinator stick that zigpy-znp drives over TCP;
- ``enecsys_inverters``: Enecsys inverters (and a foreign device) on the emulated coordinator's air;
- ``demo``: the whole appliance on one PC (``solargw demo``).
"""
