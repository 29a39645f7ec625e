"""A local stand-in for the Hugging Face Hub API, enough for `create_repo` + `upload_folder` of small files.

It answers the endpoints huggingface_hub calls on that path (repo creation, README YAML validation,
the preupload check - always "regular" so no LFS/Xet transfer is needed - and the NDJSON commit), keeps
what was uploaded in memory so tests can assert on it, and records every request with its headers.
Anything it does not know is answered 404 and recorded, so a test sees unexpected calls.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_REPO = r"(?P<type>datasets|models|spaces)/(?P<repo>[^/]+/[^/]+)"
_PREUPLOAD = re.compile(rf"^/api/{_REPO}/preupload/(?P<rev>[^/?]+)")
_COMMIT = re.compile(rf"^/api/{_REPO}/commit/(?P<rev>[^/?]+)")
_INFO = re.compile(rf"^/api/{_REPO}(?:/revision/(?P<rev>[^/?]+))?/?$")


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    visibility: str | None
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[dict[str, Any]] = field(default_factory=list)


class HubStub:
    """`with HubStub() as hub:` serves on 127.0.0.1 at a free port; `hub.endpoint` is its URL."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.repos: dict[str, Repo] = {}
        self.unknown: list[str] = []
        # route prefix -> (status, body): answer these like a Hub that says no (401, 403, 5xx, ...)
        self.refuse: dict[str, tuple[int, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "HubStub":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- the API ---------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(Request(method, path, headers, body))
        route = path.split("?", 1)[0]
        for prefix, answer in self.refuse.items():
            if route.startswith(prefix):
                return answer
        if method == "POST" and route == "/api/repos/create":
            return self._create(json.loads(body))
        if method == "POST" and route == "/api/validate-yaml":
            return 200, {"errors": [], "warnings": []}
        if method == "POST" and (m := _PREUPLOAD.match(route)):
            if m["repo"] not in self.repos:
                return 404, {"error": "Repository not found"}
            files = json.loads(body)["files"]
            return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                                   for f in files]}
        if method == "POST" and (m := _COMMIT.match(route)):
            return self._commit(m["repo"], m["type"], body)
        if method in ("GET", "HEAD") and (m := _INFO.match(route)) and m["repo"] in self.repos:
            repo = self.repos[m["repo"]]
            sha = repo.commits[-1]["oid"] if repo.commits else "0" * 40
            return 200, {"id": repo.repo_id, "sha": sha, "private": repo.visibility == "private",
                         "siblings": [{"rfilename": p} for p in sorted(repo.files)]}
        self.unknown.append(f"{method} {path}")
        return 404, {"error": f"stub does not implement {method} {route}"}

    def _create(self, payload: dict[str, Any]) -> tuple[int, Any]:
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        if repo_id in self.repos:
            return 409, {"error": "You already created this dataset repo", "url": self._url(repo_id)}
        self.repos[repo_id] = Repo(repo_id, payload.get("type") or "model", payload.get("visibility"))
        return 200, {"url": self._url(repo_id)}

    def _commit(self, repo_id: str, repo_type: str, body: bytes) -> tuple[int, Any]:
        repo = self.repos.get(repo_id)
        if repo is None:
            return 404, {"error": "Repository not found"}
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next(item["value"] for item in lines if item["key"] == "header")
        for item in lines:
            if item["key"] == "file":
                assert item["value"]["encoding"] == "base64"
                repo.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] != "header":
                return 400, {"error": f"stub accepts only regular files, got {item['key']}"}
        oid = hashlib.sha1(body).hexdigest()
        repo.commits.append({"oid": oid, "summary": header["summary"]})
        return 200, {"commitUrl": f"{self._url(repo_id)}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}

    def _url(self, repo_id: str) -> str:
        return f"{self.endpoint}/datasets/{repo_id}"


def _make_handler(stub: HubStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            status, payload = stub.handle(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler
