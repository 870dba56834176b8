"""Preemption notices: the AWS and GCP answer shapes, and a watcher polling a real HTTP endpoint
(the fake metadata server of the namespace tests, here on 127.0.0.1)."""

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer

import pytest

from elastrain.elastic.preemption import GCP_LEAD_S, NoticeWatcher, read_aws, read_gcp
from elastrain.errors import UserError
from elastrain.spec import parse_spec
from tests.fake_metadata import ACTION_PATH, handler_for


def test_aws_instance_action_answers():
    now = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC).timestamp()
    notice = read_aws(200, '{"action": "terminate", "time": "2026-11-30T12:02:00Z"}', now)
    assert notice is not None and (notice.source, notice.action, notice.lead_s) == ("aws", "terminate", 120.0)
    assert read_aws(200, '{"action": "stop", "time": "2026-11-30T12:01:00+00:00"}', now).lead_s == 60.0
    assert read_aws(404, "", now) is None                      # none scheduled
    assert read_aws(200, "<html>captive portal</html>", now) is None
    assert read_aws(200, '{"action": "terminate"}', now) is None


def test_gcp_preempted_answers():
    notice = read_gcp(200, "TRUE\n", 1000.0)
    assert notice is not None and notice.lead_s == GCP_LEAD_S and notice.action == "preempt"
    assert read_gcp(200, "FALSE", 1000.0) is None and read_gcp(503, "TRUE", 1000.0) is None


def test_the_watcher_reports_the_first_notice_of_a_real_endpoint_once(tmp_path):
    notice_file = tmp_path / "notice.json"
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(notice_file))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    seen, arrived = [], threading.Event()
    watcher = NoticeWatcher("aws", f"http://127.0.0.1:{server.server_port}{ACTION_PATH}", 0.05,
                            lambda notice: (seen.append(notice), arrived.set()))
    try:
        goes_at = datetime.now(UTC) + timedelta(seconds=120)
        notice_file.write_text(json.dumps({"action": "terminate", "time": goes_at.isoformat()}))
        assert arrived.wait(timeout=30)
        watcher.thread.join(timeout=30)
        assert not watcher.thread.is_alive() and len(seen) == 1   # one notice, then it stops
        assert 110 < seen[0].lead_s <= 120
    finally:
        watcher.stop()
        server.shutdown()


def test_the_spec_takes_a_notice_source_and_checks_it():
    spec = parse_spec("resources: {preemption_notices: {source: gcp}}")
    assert spec.resources.preemption_notices.source == "gcp" and spec.resources.preemption_notices.url is None
    with pytest.raises(UserError, match=r"preemption_notices\.source: Input should be 'aws' or 'gcp'"):
        parse_spec("resources: {preemption_notices: {source: azure}}")
