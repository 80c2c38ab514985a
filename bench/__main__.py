"""Run every benchmark in turn: ``python -m bench`` (``make bench``), or name some: ``python -m bench decode ingest``.
Arguments after a name go to that benchmark: ``python -m bench zigbee 50 5``."""
import pkgutil
import subprocess
import sys
from pathlib import Path

known = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_"))  # _name: a helper
runs: list[list[str]] = []
for arg in sys.argv[1:]:
    if arg in known or not runs:
        runs.append([arg])
    else:
        runs[-1].append(arg)
failed = []
for name, *args in runs or [[name] for name in known]:
    print(f"== bench.{name}", flush=True)
    # Each benchmark in its own interpreter, so one's threads and imports do not skew the next.
    if subprocess.call([sys.executable, "-m", f"bench.{name}", *args]) != 0:
        failed.append(name)
if failed:
    sys.exit(f"failed: {', '.join(failed)}")
