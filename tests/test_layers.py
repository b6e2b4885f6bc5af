"""The layer rule (pyproject's [tool.importlinter] contract, README "Layers") and no import cycles between
polyret's modules, imports inside functions included."""

from __future__ import annotations

import graphlib
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_layers_contract_is_kept():
    result = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                             "sys.exit(lint_imports(config_filename='pyproject.toml'))"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]


def test_no_module_import_cycles():
    graph = grimp.build_graph("polyret", include_external_packages=False)  # function-level imports counted
    edges = {m: graph.find_modules_directly_imported_by(m) - {m} for m in graph.modules}
    try:
        tuple(graphlib.TopologicalSorter(edges).static_order())
    except graphlib.CycleError as e:
        raise AssertionError(f"import cycle: {' -> '.join(e.args[1])}") from None
