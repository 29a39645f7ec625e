"""A local stand-in for the Hugging Face Hub API, enough for `create_repo` + `upload_folder`.

It answers the endpoints huggingface_hub calls on that path (repo creation, README YAML validation,
the preupload check, the NDJSON commit), keeps what was uploaded in memory so tests can assert on it,
and records every request with its headers. Anything it does not know is answered 404 and recorded,
so a test sees unexpected calls.

Preupload answers "regular" for every file, or "lfs" for files of at least `lfs_min_size` bytes; those
then take the Git LFS batch API (basic transfer: batch -> PUT -> verify) and arrive in the commit as
`lfsFile` entries. The Xet protocol (what huggingface_hub uses for "lfs" files when `hf_xet` is
installed) needs a CAS server and is not served: tests of the LFS path disable Xet.

`stall` holds route prefixes ("/" for all) whose requests are accepted and read but never answered,
like a Hub that hangs; the stalled handlers are released when the stub closes.
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
_LFS_BATCH = re.compile(r"^/(?:(?P<type>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch$")
_LFS_PUT = re.compile(r"^/lfs-upload/(?P<oid>[0-9a-f]{64})$")
_LFS_VERIFY = re.compile(r"^/lfs-verify/(?P<oid>[0-9a-f]{64})$")


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
        self.stall: set[str] = set()  # route prefixes that are never answered ("/" = every route)
        self.lfs_min_size: int | None = None  # preupload says "lfs" for files at least this large
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> bytes received by the LFS PUT
        self._released = threading.Event()
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
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- the API ---------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any] | None:
        """(status, JSON payload), or None for a stalled request that gets no answer at all."""
        with self._lock:
            self.requests.append(Request(method, path, headers, body))
        route = path.split("?", 1)[0]
        if any(route.startswith(prefix) for prefix in self.stall):
            self._released.wait()  # accepted and read, never answered; the client is long gone on release
            return None
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
            big = self.lfs_min_size
            return 200, {"files": [{"path": f["path"], "shouldIgnore": False, "oid": None,
                                    "uploadMode": "lfs" if big is not None and f["size"] >= big else "regular"}
                                   for f in files]}
        if method == "POST" and _LFS_BATCH.match(route):
            return self._lfs_batch(json.loads(body))
        if method == "PUT" and (m := _LFS_PUT.match(route)):
            if hashlib.sha256(body).hexdigest() != m["oid"]:
                return 400, {"error": "content does not match its sha256"}
            self.lfs_objects[m["oid"]] = body
            return 200, {}
        if method == "POST" and (m := _LFS_VERIFY.match(route)):
            ok = json.loads(body)["oid"] == m["oid"] and m["oid"] in self.lfs_objects
            return (200, {}) if ok else (404, {"error": "object not uploaded"})
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

    def _lfs_batch(self, payload: dict[str, Any]) -> tuple[int, Any]:
        """Git LFS batch API, upload operation, basic transfer: an upload and a verify action per object."""
        if payload.get("operation") != "upload" or "basic" not in payload.get("transfers", ["basic"]):
            return 422, {"error": f"stub serves only basic uploads, got {payload}"}
        objects = [{"oid": o["oid"], "size": o["size"], "authenticated": True,
                    "actions": {"upload": {"href": f"{self.endpoint}/lfs-upload/{o['oid']}"},
                                "verify": {"href": f"{self.endpoint}/lfs-verify/{o['oid']}"}}}
                   for o in payload["objects"]]
        return 200, {"transfer": "basic", "objects": objects}

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
            elif item["key"] == "lfsFile":
                oid = item["value"]["oid"]
                if oid not in self.lfs_objects:
                    return 400, {"error": f"LFS object {oid} was never uploaded"}
                repo.files[item["value"]["path"]] = self.lfs_objects[oid]
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

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # a streamed upload
                chunks = []
                while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)) > 0:
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()  # CRLF after each chunk
                self.rfile.readline()  # CRLF after the last (empty) chunk
                return b"".join(chunks)
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _serve(self) -> None:
            body = self._read_body()
            answer = stub.handle(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            if answer is None:
                self.close_connection = True
                return
            status, payload = answer
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
