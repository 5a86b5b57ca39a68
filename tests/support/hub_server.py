"""A local stand-in for the Hugging Face Hub HTTP API, for tests that drive the real `huggingface_hub` client.

No Hub is reachable from the test machines, so tests point the unmodified client (2.4) at this server
on 127.0.0.1. It uses the standard library only and keeps model repos in memory as git-like commits:
each commit is a full snapshot `path -> bytes` with a parent, and refs (`main`, `refs/pr/N`) point at
commits. Routes, as the client calls them:

    GET    /api/whoami-v2
    GET    /api/agent-harnesses                     (fetched once per process for the user agent)
    POST   /api/validate-yaml                       (README metadata check before a commit)
    POST   /api/repos/create                        409 when the repo exists (the client honours exist_ok)
    DELETE /api/repos/delete
    GET    /api/models/{repo}[/revision/{rev}]      sha, private, siblings
    POST   /api/models/{repo}/preupload/{rev}       uploadMode "regular" for every file: no LFS, no Xet
    POST   /api/models/{repo}/commit/{rev}          NDJSON: header, file (base64), deletedFile, deletedFolder
    GET    /api/models/{repo}/tree/{rev}[/{path}]   list_repo_files / list_repo_tree
    POST   /api/models/{repo}/paths-info/{rev}      get_paths_info
    GET    /api/models/{repo}/commits/{rev}         list_repo_commits
    HEAD   /{repo}/resolve/{rev}/{path}             X-Repo-Commit, ETag, Content-Length (hf_hub_download)
    GET    /{repo}/resolve/{rev}/{path}             the bytes (Range honoured)

Errors have the Hub's shape, a JSON body `{"error": ...}` plus `X-Error-Code` / `X-Error-Message`
headers, so the client raises its usual typed errors. Auth follows the Hub: an unknown token is
rejected on every route (401 "Invalid credentials in Authorization header"); writes need a token
whose user owns the namespace (401 without one, 403 otherwise); private repos are visible to their
owner only, and hidden from others as "not found".

Fault injection: `hub.fail_next("commit", status=429, retry_after=0)` makes the next matching
request answer that status (with `Retry-After`) before it is handled; `hub.calls(...)` is the log.
Requests to routes not listed above answer 404 and are kept in `hub.unhandled` so a test can
assert the client made no call the server does not model.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

DEFAULT_TOKENS = {"hf_local_write": "user", "hf_local_other": "someone-else"}
"""token -> user name. `hf_local_write` owns the `user/` namespace."""

_GITATTRIBUTES = (
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
)
_INVALID_TOKEN = "Invalid credentials in Authorization header"

_REPO = r"(?P<repo>[^/]+/[^/]+|[^/]+)"
_ROUTES: list[tuple[frozenset[str], str, re.Pattern[str]]] = [
    (frozenset({m}), name, re.compile(pattern))
    for m, name, pattern in [
        ("GET", "whoami", r"/api/whoami-v2"),
        ("GET", "agent_harnesses", r"/api/agent-harnesses"),
        ("POST", "validate_yaml", r"/api/validate-yaml"),
        ("POST", "create_repo", r"/api/repos/create"),
        ("DELETE", "delete_repo", r"/api/repos/delete"),
        ("POST", "preupload", rf"/api/models/{_REPO}/preupload/(?P<rev>[^/]+)"),
        ("POST", "commit", rf"/api/models/{_REPO}/commit/(?P<rev>[^/]+)"),
        ("GET", "tree", rf"/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?"),
        ("POST", "paths_info", rf"/api/models/{_REPO}/paths-info/(?P<rev>[^/]+)"),
        ("GET", "commits", rf"/api/models/{_REPO}/commits/(?P<rev>[^/]+)"),
        ("GET", "repo_info", rf"/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?"),
        ("GET", "resolve", rf"/(?!api/){_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"),
    ]
]
# HEAD is only meaningful on resolve (hf_hub_download's metadata call).
_ROUTES.append((frozenset({"HEAD"}), "resolve", _ROUTES[-1][2]))


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob: what the Hub reports as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    author: str
    date: str
    files: dict[str, bytes]


@dataclass
class Repo:
    repo_id: str
    private: bool
    created_at: str
    refs: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        return self.repo_id.split("/")[0]

    def resolve(self, revision: str) -> Commit | None:
        """A branch or PR ref, or a full commit sha."""
        oid = self.refs.get(revision, revision)
        return self.commits.get(oid)

    def history(self, oid: str) -> list[Commit]:
        out: list[Commit] = []
        current: str | None = oid
        while current is not None:
            out.append(self.commits[current])
            current = self.commits[current].parent
        return out


@dataclass
class Call:
    """One request as the server saw it."""

    method: str
    endpoint: str
    path: str
    status: int
    user: str | None


@dataclass
class _Fault:
    endpoint: str
    status: int
    remaining: int
    retry_after: int | None
    method: str | None


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    params: dict[str, str]
    user: str | None = None


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class HubError(Exception):
    """An error answer in the Hub's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        payload = {"error": message, **(extra or {})}
        self.response = _json(status, payload, {"X-Error-Message": message, **(headers or {})})
        if code:
            self.response.headers["X-Error-Code"] = code


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> _Response:
    body = json.dumps(payload).encode()
    return _Response(status, body, {"Content-Type": "application/json; charset=utf-8", **(headers or {})})


class LocalHub:
    """The store, the auth table, the fault queue and the request log behind one running server."""

    def __init__(self, tokens: dict[str, str] | None = None) -> None:
        self.tokens = dict(DEFAULT_TOKENS if tokens is None else tokens)
        self.url = ""  # set once the server is bound
        self.repos: dict[str, Repo] = {}
        self.unhandled: list[str] = []
        self.server_errors: list[str] = []
        self._calls: list[Call] = []
        self._faults: list[_Fault] = []
        self._counter = 0
        self._lock = threading.RLock()

    # -- test-facing API --------------------------------------------------------------------------
    def fail_next(
        self,
        endpoint: str,
        status: int = 429,
        times: int = 1,
        retry_after: int | None = 0,
        method: str | None = None,
    ) -> None:
        """Answer the next `times` requests to `endpoint` (a route name, e.g. "commit") with `status`.

        `retry_after` (seconds) is sent as `Retry-After`; None sends no such header.
        """
        if endpoint not in {name for _, name, _ in _ROUTES}:
            raise ValueError(f"endpoint={endpoint!r} is not a route of this server")
        with self._lock:
            self._faults.append(_Fault(endpoint, status, times, retry_after, method))

    def calls(self, endpoint: str | None = None, method: str | None = None) -> list[Call]:
        with self._lock:
            return [
                c
                for c in self._calls
                if (endpoint is None or c.endpoint == endpoint) and (method is None or c.method == method)
            ]

    def add_repo(self, repo_id: str, files: dict[str, bytes] | None = None, private: bool = False) -> Repo:
        """Create `repo_id` directly (no HTTP), optionally with a first commit holding `files`."""
        with self._lock:
            repo = self._new_repo(repo_id, private)
            if files:
                self._commit(repo, "main", "Add files", "", repo.owner, dict(files))
            return repo

    def file(self, repo_id: str, path: str, revision: str = "main") -> bytes:
        commit = self.repos[repo_id].resolve(revision)
        assert commit is not None, f"{repo_id} has no revision {revision!r}"
        return commit.files[path]

    # -- request handling -------------------------------------------------------------------------
    def handle(self, method: str, raw_target: str, headers: dict[str, str], body: bytes) -> _Response:
        """Answer one request; `raw_target` is the request target as sent (path and query, still quoted)."""
        split = urlsplit(raw_target)
        endpoint, params = _route(method, split.path)
        req = _Request(method, split.path, parse_qs(split.query), headers, body, params)
        with self._lock:
            try:
                resp = self._handle(endpoint, req)
            except HubError as err:
                resp = err.response
            except Exception:  # a server bug must reach the test, not just a 500
                self.server_errors.append(traceback.format_exc())
                resp = HubError(500, "local hub internal error").response
            self._calls.append(Call(method, endpoint, split.path, resp.status, req.user))
        return resp

    def _handle(self, endpoint: str, req: _Request) -> _Response:
        for fault in self._faults:
            if fault.endpoint == endpoint and fault.method in (None, req.method) and fault.remaining > 0:
                fault.remaining -= 1
                extra = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
                raise HubError(fault.status, f"injected failure ({fault.status})", headers=extra)
        if endpoint == "unknown":
            self.unhandled.append(f"{req.method} {req.path}")
            raise HubError(404, f"local hub does not implement {req.method} {req.path}")
        req.user = self._authenticate(req)
        return getattr(self, f"_on_{endpoint}")(req)

    def _authenticate(self, req: _Request) -> str | None:
        auth = req.headers.get("authorization")
        if auth is None:
            return None
        token = auth.removeprefix("Bearer ").strip()
        if token not in self.tokens:
            raise HubError(401, _INVALID_TOKEN)
        return self.tokens[token]

    def _readable(self, req: _Request) -> Repo:
        repo = self.repos.get(req.params["repo"])
        if repo is None or (repo.private and req.user != repo.owner):
            # The Hub hides private repos: same answer as a missing one.
            raise HubError(401 if req.user is None else 404, "Repository not found", "RepoNotFound")
        return repo

    def _writable(self, req: _Request) -> Repo:
        if req.user is None:
            raise HubError(401, "You must be authenticated to write to a repository")
        repo = self._readable(req)
        if req.user != repo.owner:
            raise HubError(403, f"You don't have the rights to write to {repo.repo_id}")
        return repo

    @staticmethod
    def _revision(repo: Repo, req: _Request) -> tuple[str, Commit]:
        rev = unquote(req.params.get("rev") or "main")
        commit = repo.resolve(rev)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return rev, commit

    # -- routes -----------------------------------------------------------------------------------
    def _on_whoami(self, req: _Request) -> _Response:
        if req.user is None:
            raise HubError(401, _INVALID_TOKEN)
        return _json(
            200,
            {
                "type": "user",
                "id": hashlib.sha1(req.user.encode()).hexdigest()[:24],
                "name": req.user,
                "fullname": req.user,
                "orgs": [],
                "auth": {
                    "type": "access_token",
                    "accessToken": {"displayName": "local-hub", "role": "write"},
                },
            },
        )

    def _on_agent_harnesses(self, req: _Request) -> _Response:
        # Fetched once per process by the client's user-agent code (detect_agent); an empty registry.
        return _json(200, {"standardEnvVars": [], "harnesses": {}})

    def _on_validate_yaml(self, req: _Request) -> _Response:
        content = json.loads(req.body or b"{}").get("content", "")
        if content.startswith("---") and "\n---" not in content[3:]:
            return _json(
                400, {"errors": [{"message": "metadata block is not closed by '---'"}], "warnings": []}
            )
        return _json(200, {"errors": [], "warnings": []})

    def _on_create_repo(self, req: _Request) -> _Response:
        if req.user is None:
            raise HubError(401, "You must be authenticated to create a repository")
        payload = json.loads(req.body or b"{}")
        if payload.get("type") not in (None, "model"):
            raise HubError(400, f"local hub serves model repos only, not {payload['type']!r}")
        namespace = payload.get("organization") or req.user
        if namespace != req.user:
            raise HubError(
                403, f'You don\'t have the rights to create a model under the namespace "{namespace}"'
            )
        repo_id = f"{namespace}/{payload['name']}"
        if repo_id in self.repos:
            # The client reads `url` from the 409 body when exist_ok=True.
            raise HubError(409, "You already created this model repo", extra={"url": self._url(repo_id)})
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        self._new_repo(repo_id, private)
        return _json(200, {"url": self._url(repo_id), "name": repo_id, "id": repo_id})

    def _on_delete_repo(self, req: _Request) -> _Response:
        payload = json.loads(req.body or b"{}")
        namespace = payload.get("organization") or req.user or ""
        req.params["repo"] = f"{namespace}/{payload.get('name')}"
        repo = self._writable(req)
        del self.repos[repo.repo_id]
        return _json(200, {})

    def _on_repo_info(self, req: _Request) -> _Response:
        repo = self._readable(req)
        _, commit = self._revision(repo, req)
        blobs = req.query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for path in sorted(commit.files):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=len(commit.files[path]), blobId=git_blob_sha1(commit.files[path]))
            siblings.append(sibling)
        return _json(
            200,
            {
                "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "author": repo.owner,
                "sha": commit.oid,
                "lastModified": commit.date,
                "createdAt": repo.created_at,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
            },
        )

    def _on_preupload(self, req: _Request) -> _Response:
        repo = self._writable(req)
        _, head = self._revision(repo, req)
        files = json.loads(req.body or b"{}").get("files", [])
        answers = []
        for entry in files:
            current = head.files.get(entry["path"])
            answers.append(
                {
                    "path": entry["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    # Lets the client skip files that did not change (it compares git blob sha1s).
                    "oid": git_blob_sha1(current) if current is not None else None,
                }
            )
        return _json(200, {"files": answers, "commitOid": head.oid})

    def _on_commit(self, req: _Request) -> _Response:
        repo = self._writable(req)
        rev, head = self._revision(repo, req)
        if rev not in repo.refs:
            raise HubError(400, f"Cannot commit to {rev!r}: it is not a branch")
        lines = [json.loads(line) for line in req.body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent and not head.oid.startswith(parent):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(head.files)
        deleted: list[str] = []
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            path = _checked_path(value.get("path", ""))
            if key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, f"unsupported encoding {value.get('encoding')!r} for {path}")
                files[path] = base64.b64decode(value["content"], validate=True)
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                deleted.append(path)
            elif key == "deletedFolder":
                doomed = [p for p in files if p.startswith(path.rstrip("/") + "/")]
                if not doomed:
                    raise HubError(404, "A folder with this name doesn't exist", "EntryNotFound")
                for p in doomed:
                    del files[p]
            elif key == "lfsFile":
                raise HubError(
                    400, "local hub takes no LFS files: preupload answers 'regular' for every file"
                )
            else:
                raise HubError(400, f"unknown commit operation {key!r}")
        branch, pr_url = rev, None
        if req.query.get("create_pr", ["0"])[0] in ("1", "true", "True"):
            number = 1 + sum(ref.startswith("refs/pr/") for ref in repo.refs)
            branch = f"refs/pr/{number}"
            repo.refs[branch] = head.oid
            pr_url = f"{self._url(repo.repo_id)}/discussions/{number}"
        commit = self._commit(
            repo, branch, header.get("summary", ""), header.get("description", ""), req.user, files
        )
        return _json(
            200,
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self._url(repo.repo_id)}/commit/{commit.oid}",
                "hookOutput": "",
                "pullRequestUrl": pr_url,
            },
        )

    def _on_tree(self, req: _Request) -> _Response:
        repo = self._readable(req)
        _, commit = self._revision(repo, req)
        prefix = unquote(req.params.get("path") or "").strip("/")
        recursive = req.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        under = {p: b for p, b in commit.files.items() if not prefix or p.startswith(prefix + "/")}
        if prefix and not under:
            raise HubError(404, f"{prefix} does not exist on {commit.oid}", "EntryNotFound")
        entries: dict[str, dict[str, Any]] = {}
        for path, data in sorted(under.items()):
            parts = path[len(prefix) + 1 if prefix else 0 :].split("/")
            depth = len(parts) if recursive else 1
            for i in range(1, min(depth, len(parts) - 1) + 1):
                folder = "/".join(filter(None, [prefix, *parts[:i]]))
                entries.setdefault(folder, _folder_entry(folder, commit.files))
            if recursive or len(parts) == 1:
                entries[path] = _file_entry(path, data)
        return _json(200, list(entries.values()))

    def _on_paths_info(self, req: _Request) -> _Response:
        repo = self._readable(req)
        _, commit = self._revision(repo, req)
        form = parse_qs(req.body.decode())
        out = []
        for path in form.get("paths", []):
            path = path.strip("/")
            if path in commit.files:
                out.append(_file_entry(path, commit.files[path]))
            elif any(p.startswith(path + "/") for p in commit.files):
                out.append(_folder_entry(path, commit.files))
        return _json(200, out)

    def _on_commits(self, req: _Request) -> _Response:
        repo = self._readable(req)
        _, commit = self._revision(repo, req)
        return _json(
            200,
            [
                {
                    "id": c.oid,
                    "title": c.title,
                    "message": c.message,
                    "authors": [{"user": c.author}],
                    "date": c.date,
                }
                for c in repo.history(commit.oid)
            ],
        )

    def _on_resolve(self, req: _Request) -> _Response:
        repo = self._readable(req)
        _, commit = self._revision(repo, req)
        path = unquote(req.params["path"])
        data = commit.files.get(path)
        if data is None:
            # X-Repo-Commit lets the client cache the absence of the file for this commit.
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        headers = {
            "Content-Type": "application/octet-stream",
            "ETag": f'"{git_blob_sha1(data)}"',
            "X-Repo-Commit": commit.oid,
            "Accept-Ranges": "bytes",
        }
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", req.headers.get("range", ""))
        if match and req.method == "GET":
            start = int(match[1])
            end = min(int(match[2]) if match[2] else len(data) - 1, len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return _Response(206, data[start : end + 1], headers)
        return _Response(200, data, headers)

    # -- store ------------------------------------------------------------------------------------
    def _url(self, repo_id: str) -> str:
        return f"{self.url}/{repo_id}"

    def _new_repo(self, repo_id: str, private: bool) -> Repo:
        if repo_id.count("/") != 1:
            raise ValueError(f"repo_id={repo_id!r} must look like 'namespace/name'")
        repo = Repo(repo_id, private, _now())
        self.repos[repo_id] = repo
        # Like the Hub: every repo starts with a system commit holding `.gitattributes`.
        self._commit(repo, "main", "initial commit", "", "system", {".gitattributes": _GITATTRIBUTES})
        return repo

    def _commit(
        self,
        repo: Repo,
        branch: str,
        title: str,
        message: str,
        author: str | None,
        files: dict[str, bytes],
    ) -> Commit:
        """Add a commit on top of `branch` (a new branch starts a root commit) and move the branch to it."""
        parent_oid = repo.refs.get(branch)
        self._counter += 1  # distinct oids for identical trees, as git's timestamps give
        digest = hashlib.sha1(f"{parent_oid}\n{title}\n{message}\n{self._counter}\n".encode())
        for path in sorted(files):
            digest.update(f"{path}\0{git_blob_sha1(files[path])}\n".encode())
        commit = Commit(digest.hexdigest(), parent_oid, title, message, author or "anonymous", _now(), files)
        repo.commits[commit.oid] = commit
        repo.refs[branch] = commit.oid
        return commit


def _route(method: str, path: str) -> tuple[str, dict[str, str]]:
    for methods, name, pattern in _ROUTES:
        if method in methods and (match := pattern.fullmatch(path)):
            return name, {k: v for k, v in match.groupdict().items() if v is not None}
    return "unknown", {}


def _checked_path(path: str) -> str:
    if (
        not path
        or path.startswith("/")
        or any(part in ("", ".", "..") for part in path.rstrip("/").split("/"))
    ):
        raise HubError(400, f"invalid path in repo: {path!r}")
    return path


def _file_entry(path: str, data: bytes) -> dict[str, Any]:
    return {"type": "file", "path": path, "oid": git_blob_sha1(data), "size": len(data)}


def _folder_entry(path: str, files: dict[str, bytes]) -> dict[str, Any]:
    listing = "".join(
        f"{p}\0{git_blob_sha1(b)}\n" for p, b in sorted(files.items()) if p.startswith(path + "/")
    )
    return {"type": "directory", "path": path, "oid": hashlib.sha1(listing.encode()).hexdigest(), "size": 0}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    timeout = 30  # an idle or stuck connection is dropped after this many seconds

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is `LocalHub.calls()`; stderr noise would only hide test output

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _dispatch(self, method: str) -> None:
        # The body is always read, so a keep-alive connection stays in sync even when the answer is an error.
        body = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        resp = self.server.hub.handle(method, self.path, headers, body)
        self.send_response(resp.status)
        for key, value in resp.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(resp.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hub: LocalHub) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)  # loopback only, ephemeral port
        self.hub = hub
        self.open_sockets: set[socket.socket] = set()
        self._sockets_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Drop keep-alive connections so their handler threads end now, not at their idle timeout."""
        with self._sockets_lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@contextmanager
def serve_hub(tokens: dict[str, str] | None = None) -> Iterator[LocalHub]:
    """Run a `LocalHub` on 127.0.0.1 (ephemeral port) for the duration of the block; `hub.url` is its endpoint."""
    hub = LocalHub(tokens)
    server = _Server(hub)
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join(timeout=5)


def point_client_at(monkeypatch: pytest.MonkeyPatch, url: str, hf_home: Path) -> None:
    """Send this process's `huggingface_hub` calls to `url`, online, with a fresh cache and no ambient token.

    The client reads `HF_ENDPOINT`, `HF_HUB_OFFLINE` and the cache paths into `huggingface_hub.constants`
    at import time (tests/conftest.py sets `HF_HUB_OFFLINE=1` before that), so the constants are patched,
    not just the environment. The environment is set too, for code that reads it later.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    url = url.rstrip("/")
    env = {
        "HF_ENDPOINT": url,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(hf_home),
        "NO_PROXY": "127.0.0.1,localhost",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(hf_home / "token"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(hf_home / ".agent_harnesses.json"))
    # With hf_xet installed, upload_folder would take the Xet pipeline, which this server does not model.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    # A fresh HTTP client: it reads NO_PROXY and holds no connection to a previous test's server.
    _http.close_session()


@contextmanager
def hub_for_test(monkeypatch: pytest.MonkeyPatch, hf_home: Path) -> Iterator[LocalHub]:
    """`serve_hub` + `point_client_at`; on a clean exit, fails if the server hit a bug or an unmodelled route."""
    with serve_hub() as hub:
        point_client_at(monkeypatch, hub.url, hf_home)
        yield hub
        assert not hub.server_errors, hub.server_errors[0]
        assert not hub.unhandled, f"the client called routes the local hub does not model: {hub.unhandled}"


@pytest.fixture
def local_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[LocalHub]:
    """A running `LocalHub` with the in-process client pointed at it.

    Test modules other than tests/peftcore/test_hub.py get it by adding
    `pytest_plugins = ["tests.support.hub_server"]` to the root tests/conftest.py.
    """
    with hub_for_test(monkeypatch, tmp_path / "hf_home") as hub:
        yield hub
