"""The teaching notebooks (notebooks/NN_*.ipynb): stored with their outputs, not stale, and still
running from a clean kernel without a cell error.

Stored outputs: each notebook is committed executed (``python notebooks/execute.py PATH``), so
its results show when it is browsed. That script records the hash of the code cells' sources in
``metadata.minillm.code_sha256``; a code cell edited without re-running the notebook changes the
hash and fails ``test_notebooks_are_stored_executed_and_not_stale``. Outputs are never compared
with a new run (they hold timings, and notebook 08's come from the real SmolLM2 when cached).

Running: each notebook runs through ``notebooks/execute.py``'s ``run`` in its own temporary
working directory (holding a copy of the text sample bundled with the notebooks), with
MINILLM_NOTEBOOK_OFFLINE=1 so that no notebook downloads anything: they train on the bundled
sample instead of tiny Shakespeare. The kernel is ipykernel on this very interpreter.

A notebook that takes more than about 40 s on the 2-core dev machine is marked slow (``SLOW``
below; ``pytest -m slow`` runs those); all eight currently run in CI. Notebook 08 opens the
built-in SmolLM2-135M-Instruct when it is cached and otherwise writes a tiny random Llama GGUF of
its own, so CI never downloads the model.
"""

import importlib.util
import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel.kernelspec")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
MAX_BYTES = 2 * 1024 * 1024  # a stored notebook stays browsable and light in the repository
# Notebooks measured at over about 40 s on the dev machine (2 shared cores) go here, by stem.
# None at the moment: 04 takes 30-40 s, the others 2-25 s.
SLOW = set()

PATHS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def _load_execute():
    spec = importlib.util.spec_from_file_location("notebooks_execute", NOTEBOOKS / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


execute = _load_execute()


def stale_reasons(nb):
    """Why a stored notebook's outputs do not belong to its code ([] when they do)."""
    stored = nb.metadata.get("minillm", {}).get("code_sha256")
    if stored is None:
        return ["it was not stored by notebooks/execute.py (no metadata.minillm.code_sha256)"]
    reasons = []
    if stored != execute.code_hash(nb):
        reasons.append("a code cell changed after the notebook was executed")
    counts = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.execution_count is None:
            reasons.append(f"code cell {i} was never run")
        counts.append(cell.execution_count)
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if errors:
            reasons.append(f"code cell {i} stored an error ({errors[0].ename})")
    if None not in counts and counts != list(range(1, len(counts) + 1)):
        reasons.append(f"the cells were not run once each, top to bottom (counts {counts})")
    return reasons


def test_notebooks_are_stored_executed_and_not_stale():
    assert len(PATHS) >= 8, f"expected the 8 numbered notebooks in {NOTEBOOKS}"
    for path in PATHS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        reasons = stale_reasons(nb)
        assert not reasons, (f"{path.name}: {'; '.join(reasons)}; re-run it with "
                             f"`python notebooks/execute.py notebooks/{path.name}`")
        assert any(cell.get("outputs") for cell in nb.cells), f"{path.name} has no outputs"
        assert path.stat().st_size < MAX_BYTES, f"{path.name} is over 2 MB"


def test_the_staleness_check_catches_an_edited_cell_and_an_unrun_one():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1", execution_count=1),
                                         nbformat.v4.new_markdown_cell("text"),
                                         nbformat.v4.new_code_cell("x", execution_count=2)])
    nb.metadata["minillm"] = {"code_sha256": execute.code_hash(nb)}
    assert stale_reasons(nb) == []
    nb.cells[1].source = "other text"  # markdown does not need a re-run
    assert stale_reasons(nb) == []
    nb.cells[2].source = "x + 1"
    assert stale_reasons(nb) == ["a code cell changed after the notebook was executed"]
    nb.cells[2].source = "x"
    nb.cells[2].execution_count = None
    assert stale_reasons(nb) == ["code cell 2 was never run"]
    nb.cells[2].execution_count = 5  # run out of order (or after an earlier cell was re-run)
    assert "not run once each" in stale_reasons(nb)[0]
    del nb.metadata["minillm"]
    assert "not stored by notebooks/execute.py" in stale_reasons(nb)[0]


def test_outputs_after_execution_carry_a_hash_that_matches(tmp_path):
    """execute.py's store step on a one-cell notebook: outputs, counts and the hash are written."""
    path = tmp_path / "tiny.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    execute.execute_and_store(path, offline=True)
    stored = nbformat.read(path, as_version=4)
    assert stale_reasons(stored) == []
    assert stored.cells[0].outputs[0].text == "42\n"
    assert stored.metadata.kernelspec.name == "python3"  # not the temporary kernel's name
    assert "execution" not in json.dumps(stored.cells[0].metadata)


def test_stored_outputs_are_tidied():
    home = str(Path.home())
    out = nbformat.v4.new_output
    cell = nbformat.v4.new_code_cell("print(...)", execution_count=1, outputs=[
        out("stream", name="stdout", text="a"), out("stream", name="stdout", text=f"b {home}/x\n"),
        out("stream", name="stderr", text="warning\n"),
        out("execute_result", data={"text/plain": f"'{home}/y'"}, execution_count=1)])
    cell.metadata["execution"] = {"iopub.status.busy": "2026-12-01T23:00:00Z"}
    nb = execute.tidy(nbformat.v4.new_notebook(cells=[cell]))
    outs = nb.cells[0].outputs
    assert [o.get("text") for o in outs[:2]] == ["ab ~/x\n", "warning\n"]  # prints joined
    assert outs[2].data["text/plain"] == "'~/y'" and "execution" not in nb.cells[0].metadata


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if p.stem in SLOW else []) for p in PATHS],
)
def test_notebook_runs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:  # from a clean slate: nothing of the stored run is kept
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    try:
        execute.run(nb, offline=True)
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{path.name}: a cell raised an error\n{e}", pytrace=False)
