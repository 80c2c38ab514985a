"""Coordinator firmware tools: check a Z-Stack hex image, flash it, inspect a stick.

- ``hexcheck``: static analysis of an Intel HEX image (TC link key, version, CCFG).
- ``flash``: builds and runs the serial-bootloader command line.
- ``stick``: asks a running stick (through zigpy-znp) what it is and how it is set up.
"""
