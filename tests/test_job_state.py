"""A job's lifecycle is one vocabulary, `runs.JobState`: which states have ended, that records keep
the strings they always had (JSON, the database), and that no module writes a state as a bare
string instead of the enum."""

import ast
import json
import re

import pytest
from sqlalchemy import text

from elastrain.runs import ENDED, JobResult, JobState, JobStatus, RunFolder
from elastrain.store.repository import JOB_STATES
from tests.conftest import REPO

STATE_NAMES = {state.value for state in JobState}
# The one module that may spell the states out.
ENUM_MODULE = "elastrain/runs/state.py"
# Strings that equal a state's name and mean something else: (file, the function, class or
# `<module>` around them, the string) -> what they are.
NOT_JOB_STATES = {
    ("elastrain/tune/study.py", "<module>", "interrupted"):
        "INTERRUPTED_ATTR, the Optuna user attribute that marks a trial a stopped study left",
    ("elastrain/api/service.py", "JobService._launch", "starting"): "the log line's verb (starting or resuming)",
    ("elastrain/cli/main.py", "main", "interrupted"): "what Ctrl-C prints, outside any job",
}


def test_the_ended_states_are_final_and_no_other():
    assert {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED} == ENDED
    assert {state for state in JobState if state.is_final} == ENDED


def test_a_stopped_job_has_ended_or_lost_its_driver():
    assert {state for state in JobState if state.is_stopped} == {*ENDED, JobState.INTERRUPTED, JobState.LOST}
    assert not any(state.is_stopped for state in (JobState.QUEUED, JobState.STARTING, JobState.RUNNING,
                                                  JobState.WAITING, JobState.UNKNOWN))


def test_every_state_is_written_as_the_string_it_always_was():
    assert [state.value for state in JobState] == [
        "queued", "starting", "running", "waiting for resources", "succeeded", "failed", "cancelled", "interrupted",
        "lost (driver gone; `elastrain resume` continues it)", "unknown"]
    assert json.dumps({"state": JobState.SUCCEEDED}) == '{"state": "succeeded"}'
    assert f"{JobState.WAITING}" == str(JobState.WAITING) == "waiting for resources"
    assert JobState.FAILED == "failed" and "cancelled" in ENDED


def test_the_run_folder_reads_back_a_state_not_a_string(tmp_path):
    folder = RunFolder(tmp_path / "job")
    folder.path.mkdir()
    folder.write_status(JobStatus("job", JobState.WAITING, workers=1))
    assert json.loads(folder.status_file.read_text())["state"] == "waiting for resources"
    assert folder.read_status().state is JobState.WAITING
    result = JobResult(job_id="job", status="succeeded", epochs=1, steps=2, metrics={}, model_path=None, wall_s=0.1,
                       run_dir=str(folder.path))
    folder.write_result(result.to_dict())
    assert JobResult(**folder.read_result()).status is JobState.SUCCEEDED
    with pytest.raises(ValueError, match="is not a valid JobState"):
        JobStatus("job", "finished")


def test_the_store_keeps_a_jobs_state_as_its_string(store):
    owner, _ = store.create_user("ada")
    store.submit(owner, "j1", {"name": "job"})
    store.update_job("j1", status=JobState.SUCCEEDED)
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT status FROM jobs")).scalar_one() == "succeeded"
    assert store.job("j1").status is JobState.SUCCEEDED
    assert [job.job_id for job in store.jobs(status=JobState.SUCCEEDED)] == ["j1"]
    with pytest.raises(ValueError, match="unknown job status"):
        store.update_job("j1", status=JobState.INTERRUPTED)   # a driver's state, never a server job's


def test_the_dashboards_lists_of_states_are_the_stores():
    script = (REPO / "elastrain" / "web" / "static" / "page-jobs.js").read_text()

    def strings(name: str) -> list[str]:
        listed = re.search(rf"const {name} = (?:new Set\()?\[([^\]]*)\]", script)
        assert listed, f"page-jobs.js has no list {name}"
        return re.findall(r"'([^']*)'", listed[1])

    assert strings("JOB_STATUSES") == list(JOB_STATES)
    assert set(strings("ENDED")) == ENDED


def _state_strings(path) -> list[tuple[str, str, int]]:
    """(scope, string, line) for each string constant in the module at `path` that is a job state's
    name, except docstrings and the members of an enum (another vocabulary spelling its own)."""
    tree = ast.parse(path.read_text())
    found: list[tuple[str, str, int]] = []

    def visit(node: ast.AST, scope: list[str]) -> None:
        body = getattr(node, "body", None)
        skipped: set[int] = set()
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            skipped.add(id(body[0]))   # a docstring
        if isinstance(node, ast.ClassDef) and any(
                (base.id if isinstance(base, ast.Name) else getattr(base, "attr", "")).endswith("Enum")
                for base in node.bases):
            skipped |= {id(statement) for statement in node.body if isinstance(statement, ast.Assign)}
        for child in ast.iter_child_nodes(node):
            if id(child) in skipped:
                continue
            if isinstance(child, ast.Constant) and child.value in STATE_NAMES:
                found.append((".".join(scope) or "<module>", child.value, child.lineno))
            inner = [*scope, child.name] if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) \
                else scope
            visit(child, inner)

    visit(tree, [])
    return found


def test_no_module_writes_a_job_state_as_a_bare_string():
    modules = [path.relative_to(REPO).as_posix() for path in sorted((REPO / "elastrain").rglob("*.py"))]
    offenders = [f"{module}:{line} {scope}: {string!r}" for module in modules if module != ENUM_MODULE
                 for scope, string, line in _state_strings(REPO / module)
                 if (module, scope, string) not in NOT_JOB_STATES]
    assert offenders == [], "use elastrain.runs.JobState"


def test_the_scan_finds_a_bare_state(tmp_path):
    module = tmp_path / "module.py"
    module.write_text('"""running"""\nfrom enum import StrEnum\n\n\nclass Phase(StrEnum):\n'
                      '    RUNNING = "running"\n\n\ndef done(status):\n    """failed"""\n'
                      '    return status == "succeeded" or status in ("cancelled",)\n')
    assert _state_strings(module) == [("done", "succeeded", 11), ("done", "cancelled", 11)]
