"""Structure rules the code keeps: each module imports only the layers docs/architecture.md lets its
layer use; only RunFolder knows the run folder's layout; the control plane reaches jobs only through
the elastic layer's public names."""

import ast
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

ARCHITECTURE = REPO / "docs" / "architecture.md"
# A row of the doc's layer table: | `unit` | its one job | `unit`, `unit` (or — or everything) |
_ROW = re.compile(r"^\| `(?P<unit>[\w.]+)` \|[^|]*\| (?P<uses>[^|]*) \|$")
# The imports issue 28 found against the layer table: each must make the checker fail.
TODAYS_BREAKS = [("elastrain.sdk", "elastrain.cli.remote"), ("elastrain.tune.study", "elastrain.cli.remote"),
                 ("elastrain.tune.trials", "elastrain.cli.remote"),
                 ("elastrain.train.artifact", "elastrain.optimize.torchao_int8"),
                 ("elastrain.store.model_ref", "elastrain.elastic.run_folder"),
                 ("elastrain.optimize.run", "elastrain.elastic.run_folder"),
                 ("elastrain.serve.replicas", "elastrain.elastic.connect")]


def layer_table(text: str) -> dict[str, set[str]]:
    """Each unit of the doc's layer table (a subpackage or top-level module of elastrain, or
    `elastrain` itself for the package's facade) and the units it may import: the ones its row
    names, and theirs in turn."""
    direct: dict[str, set[str]] = {}
    for line in text.splitlines():
        row = _ROW.match(line.strip())
        if row:
            uses = row["uses"].strip()
            direct[row["unit"]] = {"*"} if uses == "everything" else set(re.findall(r"`([\w.]+)`", uses))
    allowed: dict[str, set[str]] = {}

    def closure(unit: str) -> set[str]:
        if unit not in allowed:
            allowed[unit] = set()   # a cycle in the table stops here; the rows it visits still count
            found = set(direct[unit])
            for used in direct[unit] - {"*"}:
                found |= closure(used)
            allowed[unit] = found
        return allowed[unit]

    return {unit: closure(unit) for unit in direct}


def module_imports(package: Path) -> dict[str, set[str]]:
    """Each module under `package` (by dotted name) and the elastrain modules it imports, wherever
    in the file (a function's deferred import counts as much as one at the top)."""
    files = {".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__"): path
             for path in sorted(package.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        here = module if path.name == "__init__.py" else module.rpartition(".")[0]
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = here.split(".")[:len(here.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                # `from elastrain import paths` imports the module elastrain.paths; a package's
                # dunder constant (`__version__`) is no import of what the package holds.
                imported |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                             for alias in node.names if not alias.name.startswith("__")}
        graph[module] = {name for name in imported if name.split(".")[0] == package.name}
    return graph


def unit_of(module: str) -> str:
    """The layer-table unit a module belongs to: elastrain.train.loop -> train; elastrain -> elastrain."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_breaks(graph: dict[str, set[str]], table: dict[str, set[str]]) -> list[str]:
    """'importer -> imported' for each import that crosses into a unit the importer's unit may not use,
    and 'importer: not in the layer table' for a module whose unit has no row."""
    breaks = []
    for module, imported in sorted(graph.items()):
        unit = unit_of(module)
        if unit not in table:
            breaks.append(f"{module}: not in the layer table")
            continue
        breaks += [f"{module} -> {name}" for name in sorted(imported)
                   if unit_of(name) != unit and "*" not in table[unit] and unit_of(name) not in table[unit]]
    return breaks


def test_every_import_keeps_to_the_layer_table():
    assert layer_breaks(module_imports(REPO / "elastrain"), layer_table(ARCHITECTURE.read_text())) == []


def test_the_layer_table_names_only_units_that_exist():
    units = {unit_of(module) for module in module_imports(REPO / "elastrain")}
    table = layer_table(ARCHITECTURE.read_text())
    assert set(table) - units == set()
    assert {used for uses in table.values() for used in uses} - units - {"*"} == set()


@pytest.mark.parametrize(("importer", "imported"), TODAYS_BREAKS)
def test_the_layer_check_fails_on_each_of_todays_breaks(importer, imported):
    graph = {module: {name for name in names if (module, name) not in TODAYS_BREAKS}
             for module, names in module_imports(REPO / "elastrain").items()}
    graph[importer] = graph.get(importer, set()) | {imported}
    assert layer_breaks(graph, layer_table(ARCHITECTURE.read_text())) == [f"{importer} -> {imported}"]


def test_a_module_outside_the_table_fails_the_layer_check():
    graph = module_imports(REPO / "elastrain") | {"elastrain.streaming.shards": {"elastrain.spec"}}
    assert layer_breaks(graph, layer_table(ARCHITECTURE.read_text())) == [
        "elastrain.streaming.shards: not in the layer table"]

RUN_FOLDER_FILES = ("spec.yaml", "data.json", "status.json", "events.jsonl", "history.jsonl", "loss.jsonl", "job.log",
                    "scale-request.json", "cancel-request.json", "result.json", "curves.png")


def test_no_module_but_run_folder_names_a_run_folder_file():
    pattern = re.compile("|".join(re.escape(f'"{name}"') for name in RUN_FOLDER_FILES) + r'|/ "runs"')
    offenders = [f"{path.relative_to(REPO)}:{number}"
                 for path in sorted((REPO / "elastrain").rglob("*.py")) if path.name != "run_folder.py"
                 for number, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def test_the_api_uses_only_the_elastic_layers_public_names():
    offenders = []
    for path in sorted((REPO / "elastrain" / "api").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("elastrain.elastic."):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {node.module}")
            if isinstance(node, ast.Import):
                offenders += [f"{path.relative_to(REPO)}:{node.lineno} {alias.name}" for alias in node.names
                              if alias.name.startswith("elastrain.elastic.")]
    assert offenders == []


def test_no_tracked_file_names_the_folder_beside_the_repository():
    """A user's clone has nothing beside it, so no file of the repository may point at the folder beside it."""
    needle = ("../" + "shared").encode()  # spelt in two parts so that this file, tracked too, does not name it
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.decode()
    offenders = [name for name in tracked.split("\0")
                 if name and (REPO / name).is_file() and needle in (REPO / name).read_bytes()]
    assert offenders == []
