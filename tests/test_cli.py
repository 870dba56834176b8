"""The `elastrain` command: run / validate / predict, and bad input as one line with exit code 2."""

import gzip
import io
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import REPO

QUICK = ["--set", "train.epochs=2"]


def write(path, text):
    path.write_text(text)
    return path


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_run_prints_a_json_result_and_saves_a_model(cli, tmp_path):
    code, out, _ = cli("run", REPO / "examples" / "softmax_wine.yaml", *QUICK, "--json")
    assert code == 0
    result = last_json(out)
    assert result["status"] == "succeeded" and result["epochs"] == 2 and result["steps"] > 0
    assert {"job_id", "metrics", "model_path", "wall_s"} <= set(result)
    assert {"val_accuracy", "val_f1_macro", "val_precision_weighted", "val_recall_macro"} <= set(result["metrics"])
    assert (tmp_path / "home" / "runs" / result["job_id"] / "model" / "model.pt").is_file()


def test_run_without_json_prints_a_table(cli):
    code, out, err = cli("run", REPO / "examples" / "linear_diabetes.yaml", "--set", "train.epochs=50")
    assert code == 0 and "val_r2" in out and "val_mse" in out and "model saved to" in out
    assert "epoch 50" in err and "progress.py" not in err   # epoch lines carry no source path
    # The job id is announced before the first epoch, for `status` / `scale` from another terminal.
    job_id = out.split(" succeeded")[0].split()[-1]
    assert err.index(f"job {job_id} (from another terminal: elastrain status {job_id})") < err.index("epoch 1 ")


def test_validate_prints_the_normalized_spec(cli):
    code, out, _ = cli("validate", REPO / "examples" / "svm_iris.yaml", "--json")
    spec = last_json(out)
    assert code == 0 and spec["model"]["kind"] == "svm" and spec["resources"]["workers"] == {"min": 1, "max": 1}
    assert "manifest" not in spec["data"]   # the driver's record of the shards it read, not the user's
    code, out, _ = cli("validate", REPO / "examples" / "svm_iris.yaml")
    assert code == 0 and "optimizer: momentum" in out and "manifest" not in out


def test_predict_applies_the_saved_preprocessing_and_label_encoding(cli, tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"size": rng.normal(10, 3, 300), "color": rng.choice(["red", "blue"], 300)})
    frame["target"] = np.where(frame["size"] + 4 * (frame["color"] == "red") > 12, "big", "small")
    frame.to_csv(tmp_path / "train.csv", index=False)
    spec = write(tmp_path / "job.yaml", "data: {source: 'csv:train.csv'}\nmodel: {kind: logistic}\n"
                                        "train: {optimizer: adam, lr: 0.05, epochs: 40}\n")
    code, out, _ = cli("run", spec, "--json")
    result = last_json(out)
    assert code == 0 and result["metrics"]["val_accuracy"] >= 0.9
    frame.drop(columns="target").head(50).to_csv(tmp_path / "new.csv", index=False)
    code, out, _ = cli("predict", result["model_path"], "--input", tmp_path / "new.csv", "--json")
    predicted = last_json(out)["predictions"]
    assert code == 0 and len(predicted) == 50 and set(predicted) <= {"big", "small"}
    assert np.mean(np.array(predicted) == frame["target"].head(50).to_numpy()) >= 0.9
    code, out, _ = cli("predict", result["model_path"], "-i", tmp_path / "new.csv", "-o", tmp_path / "p.csv")
    assert code == 0 and pd.read_csv(tmp_path / "p.csv")["prediction"].tolist() == predicted
    # Probabilities per class, and input columns copied beside the predictions.
    code, out, _ = cli("predict", result["model_path"], "-i", tmp_path / "new.csv", "--proba", "--keep", "color",
                       "-o", tmp_path / "pp.csv")
    written = pd.read_csv(tmp_path / "pp.csv")
    assert code == 0 and list(written.columns) == ["color", "prediction", "proba_big", "proba_small"]
    assert written["color"].tolist() == frame["color"].head(50).tolist()
    assert np.allclose(written["proba_big"] + written["proba_small"], 1.0, atol=1e-5)
    assert ((written["proba_big"] > 0.5) == (written["prediction"] == "big")).all()
    code, out, _ = cli("predict", result["model_path"], "-i", tmp_path / "new.csv", "--proba", "--json")
    shown = last_json(out)
    assert shown["classes"] == ["big", "small"] and len(shown["probabilities"]) == 50
    code, _, err = cli("predict", result["model_path"], "-i", tmp_path / "new.csv", "--keep", "id")
    assert code == 2 and "no column 'id' in the input" in err


def _idx(path, magic, dims, values):
    with gzip.open(path, "wb") as handle:
        handle.write(struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + bytes(values))


@pytest.fixture
def bad_inputs(tmp_path):
    """Spec files, each wrong in one way, and what the one-line error must say."""
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0] * 5, "label": [0, 1] * 10})
    frame.to_csv(tmp_path / "no_target.csv", index=False)
    lines = ["x1,x2,target"] + [f"{i},{i * 2},{i % 2}" for i in range(20)]
    lines[8] = "7,seven,1"
    write(tmp_path / "bad_value.csv", "\n".join(lines) + "\n")
    (tmp_path / "idx").mkdir()
    _idx(tmp_path / "idx" / "t10k-images-idx3-ubyte.gz", 0x0803FFFF, (4, 2, 2), range(16))
    _idx(tmp_path / "idx" / "t10k-labels-idx1-ubyte.gz", 0x0801, (4,), [0, 1, 0, 1])
    cases = {
        "yaml": ("train:\n  lr: [0.1\n  epochs: 2\n", ["YAML syntax error", "bad.yaml:3"]),
        "unknown": ("train:\n  epoch: 2\n", ["unknown field 'train.epoch'", "did you mean 'epochs'"]),
        "type": ("train:\n  epochs: many\n", ["train.epochs", "integer"]),
        "lr": ("train:\n  lr: -0.1\n", ["train.lr", "greater than 0"]),
        "batch": ("data: {source: 'builtin:iris'}\ntrain: {batch_size: 1000}\n",
                  ["train.batch_size", "larger than the 120 training samples"]),
        "target": ("data: {source: 'csv:no_target.csv'}\n", ["target", "label"]),
        "loss": ("model: {kind: softmax}\ntrain: {loss: mse}\n", ["train.loss", "does not fit model 'softmax'"]),
        "magic": ("data: {source: 'idx:idx'}\nmodel: {kind: cnn}\n", ["magic"]),
        "csv": ("data: {source: 'csv:bad_value.csv'}\n", ["x2", "seven", "8"]),
        "source": ("data: {source: 'csv:missing.csv'}\n", ["missing.csv"]),
    }
    return {name: (write(tmp_path / "bad.yaml" if name == "yaml" else tmp_path / f"{name}.yaml", text), needles)
            for name, (text, needles) in cases.items()}


@pytest.mark.parametrize("case", ["yaml", "unknown", "type", "lr", "batch", "target", "loss", "magic", "csv",
                                  "source"])
def test_bad_input_gets_one_line_and_exit_code_2(cli, bad_inputs, case, elastrain_home):
    spec_file, needles = bad_inputs[case]
    code, _, err = cli("run", spec_file)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not (elastrain_home / "runs").exists()   # nothing half-made is left behind


def test_missing_spec_file(cli, tmp_path):
    code, _, err = cli("run", tmp_path / "nope.yaml")
    assert code == 2 and "spec file not found" in err and "nope.yaml" in err


def test_diverging_loss_fails_the_job_and_keeps_the_last_good_state(cli):
    code, out, err = cli("run", REPO / "examples" / "linear_diabetes.yaml", "--set", "train.lr=50", "--json")
    result = last_json(out)
    assert code == 1 and result["status"] == "failed"
    assert "step" in result["message"] and "lower train.lr" in result["message"] and "train.lr" in err
    saved = list(Path(result["run_dir"]).glob("checkpoints/last-good-step-*.pt"))
    assert len(saved) == 1
    state = torch.load(saved[0], weights_only=True)
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    assert state["step"] == result["steps"]


def test_the_installed_command_prints_no_traceback_for_bad_input(tmp_path):
    spec = write(tmp_path / "job.yaml", "train:\n  lr: 0\n")
    done = subprocess.run([sys.executable, "-m", "elastrain", "run", str(spec)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error:") and "Traceback" not in done.stderr
    help_text = subprocess.run([sys.executable, "-m", "elastrain", "run", "--help"], capture_output=True,
                               text=True, cwd=REPO, timeout=120).stdout
    assert "--set" in help_text and "--json" in help_text


def test_resume_and_status_of_a_finished_job(cli):
    code, out, _ = cli("run", REPO / "examples" / "svm_iris.yaml", *QUICK, "--json")
    job_id = last_json(out)["job_id"]
    code, _, err = cli("resume", job_id)
    assert code == 2 and "already ended (succeeded)" in err
    code, out, _ = cli("status", job_id, "--json")
    snapshot = last_json(out)
    assert code == 0 and snapshot["state"] == "succeeded" and snapshot["step"] == last_json(out)["total_steps"]
    assert [e["kind"] for e in snapshot["events"]] == ["start", "succeeded"]
    code, _, err = cli("resume", "nope")
    assert code == 2 and "no job 'nope'" in err


def test_a_job_is_found_by_a_unique_prefix_of_its_id_or_by_its_name(cli):
    ids = [last_json(cli("run", REPO / "examples" / "svm_iris.yaml", *QUICK, "--json")[1])["job_id"]
           for _ in range(2)]
    name = ids[0].rsplit("-", 3)[0]
    code, out, _ = cli("status", name, "--json")          # the name: its most recent run
    assert code == 0 and last_json(out)["job_id"] == ids[1]
    unique = next(ids[0][:n] for n in range(len(name), len(ids[0])) if not ids[1].startswith(ids[0][:n]))
    code, out, _ = cli("status", unique, "--json")
    assert code == 0 and last_json(out)["job_id"] == ids[0]
    code, _, err = cli("metrics", name + "-2", "--json")  # a prefix of both ids
    assert code == 2 and "starts 2 job ids" in err and ids[1] in err
    code, _, err = cli("resume", unique)
    assert code == 2 and f"job {ids[0]} already ended" in err


def test_error_lines_keep_square_brackets(cli, tmp_path):
    code, _, err = cli("validate", tmp_path / "job[1].yaml")
    assert code == 2
    assert "job[1].yaml" in err


IMPORTS_PROBE = """
import sys
from elastrain.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(sorted(m for m in ("torch", "ray", "sklearn", "pandas", "pyarrow") if m in sys.modules))
"""


@pytest.mark.parametrize("command", [["--help"], ["jobs"], ["status", "nope"], ["metrics", "nope"],
                                     ["scale", "nope", "-w", "2"], ["cancel", "nope"],
                                     ["validate", "examples/demo.yaml"]])
def test_commands_that_do_not_train_import_none_of_the_training_stack(command, elastrain_home):
    """They start in a fraction of a second (the figure is in docs/benchmarks.md): none of them
    loads torch, Ray, scikit-learn, pandas or pyarrow."""
    done = subprocess.run([sys.executable, "-c", IMPORTS_PROBE, *command], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr


def test_tables_keep_ids_whole_at_80_columns_and_are_tab_separated_in_a_pipe():
    from rich.console import Console

    from elastrain.cli.tables import print_table

    job_id = "a-rather-long-job-name-20261130-103843-f434dd66"
    rows = [[job_id, "succeeded", "3", "5m", "0.9471", "/home/ada/.elastrain/runs/" + job_id + "/model"]]
    headers = ["job", "status", "workers", "age", "acc / r2", "path"]
    terminal = Console(force_terminal=True, width=80, record=True)
    print_table(terminal, headers, rows, keep=[0])
    lines = terminal.export_text().splitlines()
    assert any(job_id in line for line in lines)            # never wrapped or cut
    assert max(len(line.rstrip()) for line in lines) <= 80
    pipe = Console(force_terminal=False, file=io.StringIO())
    print_table(pipe, headers, rows, keep=[0])
    assert pipe.file.getvalue().splitlines() == ["\t".join(headers), "\t".join(rows[0])]


def test_version_logs_as_json_and_admin_commands(cli, elastrain_home):
    code, out, _ = cli("--version")
    assert code == 0 and out.strip().startswith("elastrain ")
    job_id = last_json(cli("run", REPO / "examples" / "svm_iris.yaml", *QUICK, "--json")[1])["job_id"]
    code, out, _ = cli("logs", job_id, "--json")
    logged = last_json(out)
    assert code == 0 and logged["job_id"] == job_id and "epoch 2" in logged["text"] and "succeeded" in logged["text"]
    cli("admin", "create-user", "ada", "--admin")
    code, out, _ = cli("admin", "list-users", "--json")
    assert last_json(out)["users"] == [{"name": "ada", "admin": True}]
    code, out, _ = cli("admin", "tokens", "ada", "--new")
    token = out.strip().splitlines()[-1]
    code, out, _ = cli("admin", "tokens", "ada", "--json")
    prefixes = [t["prefix"] for t in last_json(out)["tokens"]]
    assert len(prefixes) == 2 and token.startswith(prefixes[1])
    code, out, _ = cli("admin", "revoke", prefixes[1], "--json")
    assert code == 0 and last_json(out) == {"revoked": prefixes[1]}
    code, out, _ = cli("admin", "tokens", "ada", "--json")
    assert [t["revoked"] for t in last_json(out)["tokens"]] == [False, True]
    code, _, err = cli("admin", "revoke", prefixes[1])
    assert code == 2 and "no live token" in err
    code, _, err = cli("admin", "tokens", "bob")
    assert code == 2 and "no user 'bob'" in err


def test_event_times_count_from_when_the_run_was_asked_for():
    """One clock: the final event's duration is the whole wall time (Ray's start included), so the
    table's times count from the same instant."""
    from rich.console import Console

    from elastrain.cli.status import print_events

    events = [{"kind": "start", "t": 100.0, "step": 0, "workers": 2, "duration_s": 0.05, "detail": {}},
              {"kind": "succeeded", "t": 110.0, "step": 40, "workers": 2, "duration_s": 15.0, "detail": {}}]
    console = Console(force_terminal=False, width=120, record=True)
    print_events(console, events)
    shown = console.export_text()
    assert "2 @ 5.0 s (step 0)" in shown and "5.00 s" in shown and "15.00 s" in shown


def test_with_elastrain_server_exported_a_local_run_is_still_found_here(cli, monkeypatch):
    job_id = last_json(cli("run", REPO / "examples" / "svm_iris.yaml", *QUICK, "--json")[1])["job_id"]
    monkeypatch.setenv("ELASTRAIN_SERVER", "http://127.0.0.1:9")   # nothing listens there
    code, out, err = cli("status", job_id, "--json")
    assert code == 0 and last_json(out)["job_id"] == job_id
    assert f"{job_id}: a run on this machine" in err
    monkeypatch.setenv("ELASTRAIN_TOKEN", "et_not-a-token")
    code, _, err = cli("status", "not-a-local-run")   # then the server is asked
    assert code != 0 and "127.0.0.1:9" in err


def test_validate_checks_the_data_as_far_as_it_can_without_training(cli, tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("a;b;label\n1;2;x\n3;4;y\n")   # validate checks the values as training does: two classes
    spec = tmp_path / "job.yaml"
    spec.write_text("data: {source: 'csv:t.csv', target: label}\n")
    code, _, err = cli("validate", spec)
    assert code == 0 and "has 3 columns, the target 'label' among them" in err
    code, _, err = cli("validate", spec, "--set", "data.target=lable")
    assert code == 2 and "no target column 'lable'" in err and "set data.target to 'label'" in err
    code, _, err = cli("validate", spec, "--set", "data.source=csv:missing.csv")
    assert code == 2 and "data file not found" in err and "missing.csv" in err
    np.savez(tmp_path / "d.npz", X=np.zeros((2, 3)), y=np.zeros(2))
    code, _, err = cli("validate", spec, "--set", "data.source=npz:d.npz", "--set", "data.npz_keys=[X, labels]")
    assert code == 2 and "no array 'labels'" in err and "X, y" in err


def test_run_draws_its_curves_and_plot_draws_them_again(cli, tmp_path, elastrain_home):
    job_id = last_json(cli("run", REPO / "examples" / "svm_iris.yaml", *QUICK, "--json")[1])["job_id"]
    drawn = elastrain_home / "runs" / job_id / "curves.png"
    assert drawn.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, _ = cli("plot", job_id, "--out", tmp_path / "c.png", "--json")
    assert code == 0 and last_json(out)["png"] == str(tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_commands_help_fits_80_columns_without_cutting_words(cli, monkeypatch):
    """At 80 columns Rich cuts a word that does not fit its column with an ellipsis; the option
    column must leave the help text room (`simulate` once had 20 characters of it). In-process:
    Rich reads COLUMNS when the help's console is made."""
    import typer

    from elastrain.cli.main import app

    def leaves(command, path):
        children = getattr(command, "commands", None)
        if not children:
            yield path
        for name, child in (children or {}).items():
            yield from leaves(child, [*path, name])

    commands = list(leaves(typer.main.get_command(app), []))
    assert ["simulate"] in commands and ["admin", "tokens"] in commands
    monkeypatch.setenv("COLUMNS", "80")
    for command in commands:
        code, shown, _ = cli(*command, "--help")
        assert code == 0, command
        lines = shown.splitlines()
        assert shown.strip() and max(map(len, lines)) <= 80, command
        assert "…" not in shown, (command, [line for line in lines if "…" in line])
        # The help column of the options table: from the last column's start to the border.
        widths = [len(line) - 2 - line.rstrip("│ ").rfind("  ") for line in lines
                  if line.startswith("│ ") and "--" in line]
        assert min(widths, default=80) >= 30, (command, widths)
