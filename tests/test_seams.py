"""The seams new kinds of learning plug into: a learner is one class behind `Learner`, a data source
one class behind `DataSource`, each registered by name (`elastrain.plugins`) and run by the elastic
engine as it is."""

import importlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from elastrain import plugins
from elastrain.data.rows import DataSource, open_source
from elastrain.runs import RunFolder
from elastrain.spec import load_spec, parse_spec
from elastrain.train.learner import Learner, build_learner
from elastrain.train.trainer import Trainer
from tests.conftest import REPO

# Copied beside each test's spec, as a user's plugin lies beside theirs, and imported as
# `mean_plugin` (never as tests.plugins...: one module, so its kinds are registered once).
PLUGIN = REPO / "tests" / "plugins" / "mean_plugin.py"
ROWS, EPOCHS = 600, 3
SPEC = f"""
name: mean-plugin
plugins: [mean_plugin]
data: {{source: 'counting:{ROWS}'}}
model: {{kind: mean, task: regression}}
train: {{optimizer: sgd, batch_size: 10, epochs: {EPOCHS}, seed: 3}}
resources: {{workers: {{min: 1, max: 2}}, cpus_per_worker: 1, wait_timeout_s: 120}}
checkpoint: {{every_steps: 20}}
"""


@pytest.fixture(autouse=True)
def registries_as_they_were():
    """What a test's plugin registered is forgotten after it, so other tests see the built-in kinds only."""
    learners, sources = dict(plugins.LEARNERS), dict(plugins.SOURCES)
    yield
    for table, before in ((plugins.LEARNERS, learners), (plugins.SOURCES, sources)):
        table.clear()
        table.update(before)
    sys.modules.pop("mean_plugin", None)


def beside_spec(folder: Path) -> Path:
    """The plugin copied into `folder`, with a spec naming it; the spec file."""
    shutil.copy(PLUGIN, folder / "mean_plugin.py")
    spec_file = folder / "job.yaml"
    spec_file.write_text(SPEC)
    return spec_file


def test_the_learner_and_the_source_are_chosen_by_name(tmp_path):
    """Kind: a seam. The torch trainer learns the built-in kinds from in-memory arrays; a kind and a
    scheme a plugin registered get the plugin's classes, which satisfy the same protocols."""
    spec = load_spec(beside_spec(tmp_path))
    mean_plugin = importlib.import_module("mean_plugin")
    builtin = build_learner(parse_spec("data: {source: 'builtin:iris'}\nmodel: {kind: softmax}\n"))
    assert type(builtin) is Trainer and isinstance(builtin, Learner) and isinstance(builtin.data, DataSource)
    source = open_source(spec)
    assert type(source) is mean_plugin.CountingSource and isinstance(source, DataSource)
    learner = build_learner(spec, source)
    assert type(learner) is mean_plugin.MeanLearner and isinstance(learner, Learner)
    assert learner.steps_per_epoch == ROWS // 10 and learner.total_steps == EPOCHS * ROWS // 10


def test_an_unknown_plugin_is_one_line_naming_it():
    with pytest.raises(Exception) as raised:
        parse_spec("plugins: [no_such_plugin_module]\n")
    assert "plugin 'no_such_plugin_module' cannot be imported" in str(raised.value)


@pytest.mark.slow
def test_a_plugin_learner_on_a_plugin_source_trains_through_elastrain_run_with_resizes(cli, tmp_path, ray_address):
    """Kind: a seam. A test-only learner (fits the target's mean) on a test-only source (rows made
    from their index) runs through `elastrain run` on Ray while the group shrinks to one worker and
    grows back to two; the mean it learns is exact, so every row was counted once per epoch."""
    code, out, err = cli("run", beside_spec(tmp_path), "--json", "--chaos", "scale=1@step=8,scale=2@step=30")
    assert code == 0, err
    result = json.loads(out)
    events = RunFolder(Path(result["run_dir"])).read_events()
    resized = [e["workers"] for e in events if e["kind"] == "resized"]
    assert resized[:2] == [1, 2], [(e["kind"], e["workers"]) for e in events]
    saved = json.loads((Path(result["model_path"]) / "mean.json").read_text())
    rows, mean_plugin = np.arange(ROWS), importlib.import_module("mean_plugin")
    assert saved["count"] == EPOCHS * ROWS
    assert saved["mean"] == pytest.approx(float(np.mean(mean_plugin.target(rows), dtype=np.float64)), rel=1e-12)
    assert result["steps"] == EPOCHS * ROWS // 10 and "val_mse" in result["metrics"]
