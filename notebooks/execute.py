"""Execute notebooks from a clean kernel and store them with their outputs.

    python notebooks/execute.py                              # all numbered notebooks, one at a time
    python notebooks/execute.py notebooks/05_use_a_model.ipynb
    python notebooks/execute.py --offline notebooks/0*.ipynb  # as the tests run them (bundled sample)

Each notebook runs in a fresh temporary working directory holding a copy of the bundled text
sample (the notebooks write their runs to ``out/`` and ``data/`` there), with ipykernel on this
very interpreter and one BLAS thread (the notebooks' matrices are too small to gain from more).
The executed notebook is written back in place, with ``metadata.minillm.code_sha256``: the hash
of its code cells' sources at execution time. ``tests/test_notebooks.py`` compares that hash
with the sources, so a code cell edited without re-running the notebook fails the tests (the
outputs themselves are never compared: they hold timings, and notebook 08's come from the real
SmolLM2 when it is cached). Cell timing metadata is dropped to keep diffs small.

The tests import ``run`` and ``code_hash`` from here, so the tests and this script execute a
notebook the same way.
"""

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent
SAMPLE = "tiny_shakespeare_sample.txt"  # the offline corpus the notebooks read from their cwd
CELL_TIMEOUT = 300  # seconds; a cell that hangs fails instead of stalling
KERNEL = "minillm-notebooks"


def code_hash(nb):
    """sha256 of the notebook's code cells' sources, in order (markdown edits do not count)."""
    h = hashlib.sha256()
    for cell in nb.cells:
        if cell.cell_type == "code":
            h.update(cell.source.encode("utf-8"))
            h.update(b"\0")  # cell boundary: moving a line between cells changes the hash
    return h.hexdigest()


def _kernel_manager(directory):
    """A KernelManager for ipykernel on sys.executable (not whatever 'python3' spec is found)."""
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    write_kernel_spec(Path(directory) / KERNEL)
    return KernelManager(kernel_name=KERNEL,
                         kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(directory)]))


def run(nb, offline=True, timeout=CELL_TIMEOUT):
    """Execute ``nb`` (a nbformat NotebookNode, changed in place) from a clean kernel in a fresh
    temporary directory. ``offline`` sets MINILLM_NOTEBOOK_OFFLINE=1 (the bundled sample instead
    of tiny Shakespeare). Raises nbclient's CellExecutionError on a cell error."""
    import nbclient

    env = {"MINILLM_NOTEBOOK_OFFLINE": "1" if offline else None}  # None: unset
    # The notebooks' matmuls are tiny; on a small shared machine BLAS threads mostly wait for a
    # free core (notebook 6 took 100-140 s instead of 16 s on 2 busy cores). Set only if unset.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if var not in os.environ:
            env[var] = "1"
    saved = {k: os.environ.get(k) for k in env}
    with tempfile.TemporaryDirectory(prefix="minillm-nb-") as tmp:
        work, kernels = Path(tmp) / "work", Path(tmp) / "kernels"
        work.mkdir()
        shutil.copy(NOTEBOOKS / SAMPLE, work / SAMPLE)
        _set_env(env)  # the kernel inherits this process's environment
        try:
            client = nbclient.NotebookClient(nb, km=_kernel_manager(kernels), timeout=timeout,
                                             resources={"metadata": {"path": str(work)}})
            client.execute(cleanup_kc=True)
        finally:
            _set_env(saved)
    return nb


def _set_env(values):
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def execute_and_store(path, offline=False):
    """Run the notebook at ``path`` and write it back with its outputs and code hash."""
    import nbformat

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    kernelspec = nb.metadata.get("kernelspec")
    run(nb, offline=offline)
    if kernelspec is not None:
        nb.metadata["kernelspec"] = kernelspec  # the generic python3 kernel, not the run's own
    tidy(nb)
    nb.metadata["minillm"] = {"code_sha256": code_hash(nb), "offline": offline}
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return path.stat().st_size


def tidy(nb):
    """What the stored notebook keeps of the run: no per-cell timestamps (noise in every diff),
    consecutive prints as one output, and the home folder written as ~ in printed paths."""
    home = str(Path.home())
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        cell.outputs = merge_streams(cell.outputs)
        for out in cell.outputs:
            if out.output_type == "stream":
                out.text = out.text.replace(home + "/", "~/")
            elif "text/plain" in out.get("data", {}):
                out.data["text/plain"] = out.data["text/plain"].replace(home + "/", "~/")
    return nb


def merge_streams(outputs):
    """Consecutive stdout (or stderr) outputs joined into one, as Jupyter shows them: a loop
    that prints piece by piece stores one output instead of hundreds."""
    merged = []
    for out in outputs:
        last = merged[-1] if merged else None
        if (out.output_type == "stream" and last is not None and last.output_type == "stream"
                and last.name == out.name):
            last.text += out.text
        else:
            merged.append(out)
    return merged


def main(argv=None):
    p = argparse.ArgumentParser(description="Execute notebooks from a clean kernel and store "
                                            "them with their outputs.")
    p.add_argument("paths", nargs="*", help="default: every notebooks/NN_*.ipynb")
    p.add_argument("--offline", action="store_true",
                   help="train on the bundled sample instead of tiny Shakespeare")
    args = p.parse_args(argv)
    paths = args.paths or sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    for path in paths:  # one at a time: each notebook uses the whole machine
        print(f"executing {path} ...", flush=True)
        size = execute_and_store(path, offline=args.offline)
        print(f"  stored with outputs ({size / 1024:.0f} KB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
