"""Run every benchmark in turn: ``python -m bench`` (``make bench``), or name some: ``python -m bench decode ingest``."""
import pkgutil
import subprocess
import sys
from pathlib import Path

names = sys.argv[1:] or sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name != "__main__")
failed = []
for name in names:
    print(f"== bench.{name}", flush=True)
    # Each benchmark in its own interpreter, so one's threads and imports do not skew the next.
    if subprocess.call([sys.executable, "-m", f"bench.{name}"]) != 0:
        failed.append(name)
if failed:
    sys.exit(f"failed: {', '.join(failed)}")
