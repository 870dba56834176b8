"""The bundle of local code and data a submitted job takes with it: packed, checked, unpacked."""

import io
import zipfile

import pytest

from elastrain import bundle
from elastrain.errors import UserError
from elastrain.spec import load_spec
from tests.conftest import REPO


def zipped(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_spec_with_local_code_and_data_packs_both_and_runs_from_the_unpacked_copy(tmp_path):
    (tmp_path / "net.py").write_text("def build(shape, outputs):\n    pass\n")
    (tmp_path / "rows.csv").write_text("a,target\n1,0\n2,1\n")
    (tmp_path / "job.yaml").write_text("data: {source: 'csv:rows.csv'}\nmodel: {kind: 'python:net:build'}\n")
    archive, shipped = bundle.pack(load_spec(tmp_path / "job.yaml"), tmp_path)
    assert shipped.data.source == "csv:data/rows.csv"
    assert sorted(zipfile.ZipFile(io.BytesIO(archive)).namelist()) == ["code/net.py", "data/rows.csv"]
    digest = bundle.unpack(archive, tmp_path / "server")
    assert bundle.unpack(archive, tmp_path / "server") == digest   # once per content
    spec, code_paths = bundle.resolve(shipped, tmp_path / "server" / digest)
    assert spec.data.source_arg == str(tmp_path / "server" / digest / "data" / "rows.csv")
    assert (tmp_path / "server" / digest / "code" / "net.py").is_file() and code_paths[0].endswith("code")


def test_a_spec_that_needs_nothing_local_ships_nothing():
    archive, spec = bundle.pack(load_spec(REPO / "examples" / "svm_iris.yaml"), REPO / "examples")
    assert archive is None and spec.data.source == "builtin:iris"
    archive, _ = bundle.pack(load_spec(REPO / "examples" / "user_model.yaml"), REPO / "examples")
    assert zipfile.ZipFile(io.BytesIO(archive)).namelist() == ["code/my_model.py"]


@pytest.mark.parametrize("name", ["../evil.py", "/etc/evil", "code/../../evil", "elsewhere/x.py"])
def test_an_entry_outside_code_or_data_is_refused(tmp_path, name):
    with pytest.raises(UserError, match="may not be unpacked"):
        bundle.unpack(zipped({name: b"x"}), tmp_path)
    assert not any(tmp_path.rglob("*evil*"))


def test_what_is_not_a_zip_or_unpacks_too_big_is_refused(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="not a zip"):
        bundle.unpack(b"PK? no", tmp_path)
    monkeypatch.setattr(bundle, "MAX_UNPACKED_BYTES", 1000)
    with pytest.raises(UserError, match="unpacks to over"):
        bundle.unpack(zipped({"data/zeros": bytes(2000)}), tmp_path)
    assert list(tmp_path.iterdir()) == []
