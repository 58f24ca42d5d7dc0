"""The layering the design promises: a pure core, and no arrow pointing back up."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PURE_ALLOWED = {"numpy", "msgpack", "stream"}  # msgpack: the wire format's header


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_imports_only_stdlib_numpy_and_itself():
    for path in sorted((ROOT / "stream" / "core").glob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "stream":
                assert name.startswith(("stream.core", "stream.errors")), f"{path.name} imports {name}"
            else:
                assert top in sys.stdlib_module_names or top in PURE_ALLOWED, f"{path.name} imports {name}"


def test_stream_never_imports_deployments_or_loadtest_at_module_level():
    for path in sorted((ROOT / "stream").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only: the CLI may import the Ray runner lazily
            if isinstance(node, ast.Import | ast.ImportFrom):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for mod in mods:
                    assert not mod.startswith(("deployments", "loadtest")), f"{path} imports {mod}"


def test_stream_never_imports_deployments_even_lazily():
    """The runner choice goes through entry points (`stream.runners`), so `stream` can be used and
    packaged without the Ray layer."""
    for path in sorted((ROOT / "stream").rglob("*.py")):
        for name in _imports(path):
            assert not name.startswith("deployments"), f"{path.relative_to(ROOT)} imports {name}"


def test_stream_stages_holds_only_stages():
    modules = {p.stem for p in (ROOT / "stream" / "stages").glob("*.py")}
    assert modules == {"__init__", "base", "ingest", "preprocess", "infer", "postprocess"}


def test_both_runners_are_registered_entry_points():
    from stream.runners import load_runner, runner_names

    assert {"processes", "ray"} <= set(runner_names())
    assert callable(load_runner("processes"))
