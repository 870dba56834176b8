"""A stand-in for a cloud node's metadata endpoint (AWS's shape), run inside a namespace host of
`tests/netns_cluster.py`: `python -m tests.fake_metadata PORT NOTICE_FILE`. It answers IMDSv2's
token request, and `spot/instance-action` with 404 until NOTICE_FILE exists, then with the notice
it holds (the JSON AWS sends). Listens on 127.0.0.1 of its namespace only."""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ACTION_PATH = "/latest/meta-data/spot/instance-action"
TOKEN = "test-session-token"


def handler_for(notice_file: Path) -> type[BaseHTTPRequestHandler]:
    class Metadata(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            self._answer(200, TOKEN) if self.path == "/latest/api/token" else self._answer(404, "")

        def do_GET(self) -> None:
            if self.path != ACTION_PATH or self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
                self._answer(401 if self.path == ACTION_PATH else 404, "")
            elif notice_file.exists():
                self._answer(200, notice_file.read_text())
            else:
                self._answer(404, "")

        def _answer(self, status: int, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    return Metadata


if __name__ == "__main__":
    port, notice = int(sys.argv[1]), Path(sys.argv[2])
    server = ThreadingHTTPServer(("127.0.0.1", port), handler_for(notice))
    print("ready", flush=True)
    server.serve_forever()
