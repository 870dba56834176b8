"""Preemption notices: a cloud's warning, on the node itself, that it will take the node back.

Each worker watches its own node's metadata endpoint; on a notice its group stops after the
same step and the worker leaves, so the group re-forms without it before the node is gone (no
step lost, no collective timeout). The shapes read are:

- AWS EC2 spot, `/latest/meta-data/spot/instance-action`: 404 until an interruption is scheduled,
  then 200 with JSON `{"action": "terminate" | "stop" | "hibernate", "time": "2026-11-30T12:00:00Z"}`,
  two minutes ahead (the EC2 user guide, "Spot Instance interruption notices"). IMDSv2 asks for a
  session token first (PUT `/latest/api/token`); a server without it is read without one.
- GCP, `/computeMetadata/v1/instance/preempted` with header `Metadata-Flavor: Google`: `FALSE`,
  then `TRUE` once the VM is being preempted, 30 s ahead (Compute Engine's documentation,
  "Preemption process"); no time is given, so the lead is taken as those 30 s.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

AWS_ACTION_URL = "http://169.254.169.254/latest/meta-data/spot/instance-action"
GCP_PREEMPTED_URL = "http://metadata.google.internal/computeMetadata/v1/instance/preempted"
GCP_LEAD_S = 30.0
_AWS_TOKEN_PATH = "/latest/api/token"
_AWS_TOKEN_TTL_S = "21600"
_REQUEST_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Notice:
    """A preemption notice as one worker saw it (times are wall-clock epoch seconds)."""

    source: str           # "aws" or "gcp"
    action: str           # what the cloud will do: terminate, stop, hibernate (AWS), preempt (GCP)
    seen_at: float
    terminate_at: float   # when the node goes

    @property
    def lead_s(self) -> float:
        """Seconds between seeing the notice and the node going."""
        return self.terminate_at - self.seen_at


def read_aws(status: int, body: str, now: float) -> Notice | None:
    """The notice in an answer of AWS's `spot/instance-action`, or None (404: none scheduled;
    a body that is not the documented JSON counts as none)."""
    if status != 200:
        return None
    try:
        answer = json.loads(body)
        when = dt.datetime.fromisoformat(answer["time"].replace("Z", "+00:00"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return Notice("aws", str(answer.get("action", "terminate")), now, when.timestamp())


def read_gcp(status: int, body: str, now: float) -> Notice | None:
    """The notice in an answer of GCP's `instance/preempted`, or None (anything but 200 `TRUE`)."""
    if status != 200 or body.strip().upper() != "TRUE":
        return None
    return Notice("gcp", "preempt", now, now + GCP_LEAD_S)


def default_url(source: str) -> str:
    """The metadata endpoint a cloud's nodes answer notices on."""
    return AWS_ACTION_URL if source == "aws" else GCP_PREEMPTED_URL


class NoticeWatcher:
    """Polls this node's metadata endpoint every `poll_s` seconds in a daemon thread and calls
    `on_notice` once, with the first notice seen; then stops. Unreachable endpoints (not on that
    cloud, or a network blip) are polled again at the next tick.

    Args:
        source: "aws" or "gcp": which answer shape to read.
        url: the endpoint (default: the cloud's own, see :func:`default_url`).
        poll_s: seconds between polls.
        on_notice: called from the watcher's thread.
    """

    def __init__(self, source: str, url: str | None, poll_s: float, on_notice: Callable[[Notice], None]) -> None:
        self.source = source
        self.url = url or default_url(source)
        self.poll_s = poll_s
        self.on_notice = on_notice
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="preemption-notices", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop polling."""
        self.stopping.set()

    def _watch(self) -> None:
        import httpx

        with httpx.Client(timeout=_REQUEST_TIMEOUT_S) as client:
            while not self.stopping.is_set():
                notice = self._poll(client)
                if notice is not None:
                    self.on_notice(notice)
                    return
                self.stopping.wait(self.poll_s)

    def _poll(self, client) -> Notice | None:
        import httpx

        try:
            if self.source == "gcp":
                answer = client.get(self.url, headers={"Metadata-Flavor": "Google"})
                return read_gcp(answer.status_code, answer.text, time.time())
            answer = client.get(self.url, headers=self._aws_token_header(client))
            return read_aws(answer.status_code, answer.text, time.time())
        except httpx.HTTPError:
            return None

    def _aws_token_header(self, client) -> dict:
        """IMDSv2's session token header, or none where the endpoint has no token service (IMDSv1)."""
        import httpx

        base = self.url.split("/latest/", 1)[0]
        try:
            answer = client.put(base + _AWS_TOKEN_PATH,
                                headers={"X-aws-ec2-metadata-token-ttl-seconds": _AWS_TOKEN_TTL_S})
        except httpx.HTTPError:
            return {}
        return {"X-aws-ec2-metadata-token": answer.text} if answer.status_code == 200 else {}
