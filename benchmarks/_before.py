"""Load a module's source as of an earlier commit, to time it side by side with the current one."""

import pathlib
import subprocess
import sys
import types

ROOT = pathlib.Path(__file__).resolve().parents[1]
BEFORE = "33a483d~1"  # the last commit with gradient_flow's earlier taps (issue 17, item 1)


def load(rev: str = BEFORE, path: str = "gradflow/measure/flow.py", name: str = "flow_before"):
    """The module at ``path`` as of git revision ``rev`` (it imports today's gradflow for the rest)."""
    src = subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    module = types.ModuleType(name)
    module.__file__ = f"{rev}:{path}"
    sys.modules[name] = module
    exec(compile(src, module.__file__, "exec"), module.__dict__)
    return module
