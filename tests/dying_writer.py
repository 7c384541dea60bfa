"""A writer killed half way through a file: runs code in a child Python whose atomic writes
(``minillm.checkpoints.atomic``) stop after half of the first file's bytes and exit at once with
status 9 (``os._exit``: no cleanup, no finally blocks, as after SIGKILL)."""

import subprocess
import sys
import textwrap

_DIE_HALF_WAY = """
import os
from minillm.checkpoints import atomic
real = atomic._write_all
def dying(f, data):
    real(f, data[: len(data) // 2])
    os._exit(9)
atomic._write_all = dying
"""


def run_dying(code):
    """Run ``code`` (``atomic`` is imported) in a child whose first file write dies half way;
    returns the child's exit status (9 when it died there)."""
    script = _DIE_HALF_WAY + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], check=False).returncode
