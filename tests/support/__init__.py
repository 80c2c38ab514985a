"""What the tests share: real servers started for a test, fakes that speak the real protocol,
test data, and the small helpers (waiting, ports, clocks). Imported as ``from support.x import ...``
(pytest puts ``tests/`` on the path); the fixtures built on them are in ``tests/conftest.py``."""
