"""Structure rules the code keeps: only RunFolder knows the run folder's layout; the control plane
reaches jobs only through the elastic layer's public names."""

import ast
import re

from tests.conftest import REPO

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
