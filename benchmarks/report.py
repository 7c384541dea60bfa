"""One table of every CPU kernel benchmark: op, shape, reference ms, numba ms, speed-up.

The kernel rows come from bench_kernels.py (the default version of every op). Imports each
benchmarks/bench_*.py that defines ``rows()`` (a list of dicts with op, version,
shape, ref_ms, ms, speedup) and prints them together; a module without ``rows()``, or one that
cannot be imported here (a GPU suite on a CPU machine), is skipped with a note.
Usage: ``python benchmarks/report.py [name ...]`` (names filter the modules, e.g. ``kernels``).
"""

import importlib
import pathlib
import sys

import minillm  # noqa: F401  (first: minillm/_env.py's settings apply only before NumPy loads)

HERE = pathlib.Path(__file__).resolve().parent


def collect(names=()):
    sys.path.insert(0, str(HERE))
    out, skipped = [], []
    for path in sorted(HERE.glob("bench_*.py")):
        mod_name = path.stem
        if names and not any(n in mod_name for n in names):
            continue
        try:
            mod = importlib.import_module(mod_name)
        except Exception as e:  # noqa: BLE001 - a broken or GPU-only suite must not stop the report
            skipped.append(f"{mod_name} (import failed: {type(e).__name__}: {e})")
            continue
        if not callable(getattr(mod, "rows", None)):
            skipped.append(f"{mod_name} (no rows())")
            continue
        out.extend(mod.rows())
    return out, skipped


def main(argv):
    rows, skipped = collect(argv)
    print(f"{'op':28s} {'shape':>16s} {'reference ms':>13s} {'numba ms':>10s} {'speed-up':>9s}")
    for r in rows:
        op = f"{r['op']} v{r['version']}" if r.get("version") is not None else r["op"]
        print(f"{op:28s} {str(r['shape']):>16s} {r['ref_ms']:13.3f} {r['ms']:10.3f} "
              f"{r['speedup']:8.2f}x")
    for s in skipped:
        print(f"skipped: {s}")


if __name__ == "__main__":
    main(sys.argv[1:])
