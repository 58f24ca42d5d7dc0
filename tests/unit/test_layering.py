"""The layering the design promises, as rules about which folder may import which.

The rules name folders, never files, so a module can be added or split without touching this
test. docs/architecture.md ("Code layout") says the same in prose.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE_ALLOWED = {"numpy", "msgpack"}  # msgpack: the wire format's header
ADAPTER_SYSTEMS = ("redis", "media", "openvino")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, *, module_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else ast.walk(tree)
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def _under(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _violations(folder: str, allowed_stream: tuple[str, ...]) -> list[str]:
    """Imports of `stream.*` from modules under `folder` that fall outside `allowed_stream`."""
    found = []
    for path in _modules(folder):
        for name in _imports(path):
            if _under(name, "stream") and not _under(name, *allowed_stream):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


def test_core_imports_only_stdlib_numpy_and_itself():
    for path in _modules("stream/core"):
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "stream":
                assert _under(name, "stream.core", "stream.errors"), f"{path.name} imports {name}"
            else:
                assert top in sys.stdlib_module_names or top in PURE_ALLOWED, f"{path.name} imports {name}"


@pytest.mark.parametrize(
    ("folder", "allowed"),
    [
        # adapters talk to one outside system each: they build on the core, never on what uses them
        (
            "stream/adapters",  # stream.watchdog: redis-server dies with the process that started it
            (
                "stream.adapters",
                "stream.core",
                "stream.errors",
                "stream.waiting",
                "stream.settings",
                "stream.zoo",
                "stream.watchdog",
            ),
        ),
        ("stream/zoo", ("stream.zoo", "stream.core", "stream.errors")),
        # stages glue core and adapters; a run, a command or a reader is built on them, not under them
        (
            "stream/stages",
            (
                "stream.stages",
                "stream.adapters",
                "stream.core",
                "stream.errors",
                "stream.waiting",
                "stream.settings",
                "stream.zoo",
            ),
        ),
        (
            "stream/readers",
            (
                "stream.readers",
                "stream.adapters",
                "stream.core",
                "stream.errors",
                "stream.settings",
                "stream.waiting",
            ),
        ),
        # sinks deliver what Redis holds: a runner or a command starts them, never a stage
        (
            "stream/sinks",
            (
                "stream.sinks",
                "stream.adapters",
                "stream.core",
                "stream.errors",
                "stream.settings",
                "stream.waiting",
            ),
        ),
    ],
)
def test_each_layer_imports_only_the_layers_below_it(folder: str, allowed: tuple[str, ...]):
    assert _violations(folder, allowed) == []


def test_an_adapter_for_one_system_never_imports_another_systems_adapter():
    for system in ADAPTER_SYSTEMS:
        others = tuple(f"stream.adapters.{o}" for o in ADAPTER_SYSTEMS if o != system)
        for path in _modules(f"stream/adapters/{system}"):
            bad = [n for n in _imports(path) if _under(n, *others)]
            assert bad == [], f"{path.relative_to(ROOT)} imports {bad}"


def test_a_stages_private_io_is_imported_only_by_that_stage():
    """`stream/stages/ingest/` etc. hold I/O only that stage needs: nothing else in the product
    leans on it (the benchmarks and tests may)."""
    stage_packages = [p.parent for p in (ROOT / "stream" / "stages").glob("*/__init__.py")]
    for package in stage_packages:
        private = _module_name(package)
        for path in _modules("stream", "deployments", "loadtest"):
            if package in path.parents:
                continue
            bad = [n for n in _imports(path) if _under(n, private) and not n.endswith(".stage")]
            assert bad == [], f"{path.relative_to(ROOT)} imports {bad}, private to {private}"


def test_stream_never_imports_deployments_or_loadtest():
    """The runner choice goes through entry points (`stream.runners`), so `stream` can be used and
    packaged without the Ray layer or the load tester."""
    for path in _modules("stream"):
        for name in _imports(path):
            assert not _under(name, "deployments", "loadtest"), f"{path.relative_to(ROOT)} imports {name}"


def test_the_serve_application_never_imports_the_local_runner():
    for path in _modules("deployments/serve", "deployments/api", "deployments/console"):
        for name in _imports(path):
            assert not _under(name, "deployments.local"), f"{path.relative_to(ROOT)} imports {name}"


def test_stream_stages_holds_only_stages():
    from stream.core.messages import STAGES

    children = {p.stem for p in (ROOT / "stream" / "stages").glob("*.py")}
    children |= {p.parent.name for p in (ROOT / "stream" / "stages").glob("*/__init__.py")}
    assert children <= {"__init__", "base", *STAGES}, sorted(children - {"__init__", "base", *STAGES})


def test_both_runners_are_registered_entry_points():
    from stream.runners import load_runner, runner_names

    assert {"processes", "ray"} <= set(runner_names())
    assert callable(load_runner("processes"))
