"""Run every benchmark in this folder, one after another (`make bench`)."""
import pkgutil
import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    for mod in sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_")):
        print(f"\n=== benchmarks.{mod}", flush=True)
        sys.argv = [mod]
        runpy.run_module(f"benchmarks.{mod}", run_name="__main__")
