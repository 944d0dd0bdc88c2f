"""A small Hugging Face Hub-compatible HTTP server, for tests only.

It lets the real ``huggingface_hub`` / ``transformers`` clients publish and download repos with no internet:
``python tests/hub_server.py --root DIR [--token TOK] [--inline-all]`` binds 127.0.0.1 on two free ports and
prints ``HUB_ENDPOINT=http://127.0.0.1:PORT`` once ready.

Emulated (models, datasets and spaces alike):
- repo creation/deletion, ``whoami-v2``, ``validate-yaml``;
- uploads: ``preupload`` (``.safetensors``/``.bin``/... and files >= 10 MB are "lfs", the rest "regular";
  everything "regular" with ``--inline-all``), the NDJSON ``commit`` endpoint (``file``, ``lfsFile``,
  ``deletedFile``, ``deletedFolder``; ``parentCommit`` checked) and the Git LFS batch API (basic transfer:
  PUT to a second "large file origin" server, then verify);
- downloads: repo info at a revision, ``tree`` listings, ``refs``, ``commits``, and ``resolve`` (GET/HEAD,
  ``Range``, ``ETag``, ``X-Repo-Commit``; LFS files answer a 302 to the origin with ``X-Linked-Etag`` and
  ``X-Linked-Size``);
- branches and tags; revisions given as a branch, a tag or a full commit sha (URL-quoted or not);
- errors through ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``);
- with ``--token``: writes need ``Authorization: Bearer TOK`` (401 otherwise), a wrong token is refused
  everywhere, and the large-file origin refuses (403) any request that carries an ``Authorization`` header.

Not emulated: Xet storage (clients must run with ``HF_HUB_DISABLE_XET=1`` unless the server runs with
``--inline-all``), pull requests and ``refs/pr/*``, private/gated repos, multipart LFS uploads, pagination,
``paths-info``, copies between repos, squash/rename, and every non-git Hub feature. State lives in ``--root``
(content-addressed blobs plus one JSON file per repo) and survives a restart.

The pytest helpers live here too: :func:`start_hub_server`, the session fixture ``hub_server``,
:func:`hub_env` (a clean environment for client subprocesses) and :func:`run_client`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import os
import queue
import re
import secrets
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qs, unquote, urlsplit

try:
    import pytest
except ModuleNotFoundError:  # the server itself needs only the standard library
    pytest = None  # type: ignore[assignment]

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".msgpack", ".npy", ".npz", ".gguf")
LFS_THRESHOLD = 10 * 1024 * 1024
USER = "tester"
GITATTRIBUTES = b"".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n".encode() for s in LFS_SUFFIXES)
REPO_RE = r"(?P<repo>[\w][\w.-]*/[\w][\w.-]*)"
API_RE = re.compile(rf"^/api/(?P<rtype>models|datasets|spaces)/{REPO_RE}(?P<rest>/.*)?$")
RESOLVE_RE = re.compile(rf"^/(?:(?P<rtype>datasets|spaces)/)?{REPO_RE}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
LFS_RE = re.compile(rf"^/(?:(?P<rtype>datasets|spaces)/)?{REPO_RE}\.git/info/lfs/objects/(?P<op>batch|verify)$")
Entry = dict[str, Any]  # {"sha256", "size", "lfs", "oid"}: one file of a commit


class HubError(Exception):
    """An error reply: HTTP status, optional ``X-Error-Code``, message, optional ``X-Repo-Commit``."""

    def __init__(self, status: int, code: str | None, message: str, commit: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.commit = status, code, message, commit


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def clean_path(path: str) -> str:
    parts = path.split("/")
    if not path or any(p in ("", ".", "..") for p in parts) or "\\" in path:
        raise HubError(400, None, f"Invalid path in repo: {path!r}")
    return path


class Store:
    """Repos (commit history, branches, tags as one JSON file each) and content-addressed blobs on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock = threading.RLock()
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        self.repos: dict[str, dict[str, Any]] = {}
        for file in (root / "repos").glob("*/*/*.json"):
            self.repos[f"{file.parent.parent.name}/{file.parent.name}/{file.stem}"] = json.loads(file.read_text())

    def blob_path(self, sha256: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise HubError(400, None, f"Invalid sha256 oid: {sha256!r}")
        return self.root / "blobs" / sha256

    def put_blob(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.blob_path(sha256)
        if not path.exists():
            tmp = path.with_name(f"{sha256}.{secrets.token_hex(4)}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return sha256

    def blob_size(self, sha256: str) -> int | None:
        path = self.blob_path(sha256)
        return path.stat().st_size if path.exists() else None

    def save(self, key: str) -> None:
        path = self.root / "repos" / f"{key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.repos[key]))
        os.replace(tmp, path)

    def repo(self, key: str) -> dict[str, Any]:
        if key not in self.repos:
            raise HubError(404, "RepoNotFound", f"Repository {key} not found")
        return self.repos[key]

    def resolve(self, key: str, rev: str) -> str:
        repo = self.repo(key)
        rev = unquote(rev)
        rev = rev.removeprefix("refs/heads/").removeprefix("refs/tags/")
        if rev in repo["branches"]:
            return str(repo["branches"][rev])
        if rev in repo["tags"]:
            return str(repo["tags"][rev]["sha"])
        if rev in repo["commits"]:
            return rev
        raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")

    def add_commit(self, key: str, parent: str | None, files: dict[str, Entry], title: str, body: str) -> str:
        payload = json.dumps([key, parent, files, title, body, time.time_ns(), secrets.token_hex(8)])
        sha = hashlib.sha1(payload.encode()).hexdigest()
        commit = {"parent": parent, "files": files, "title": title, "message": body, "date": now_iso()}
        self.repos[key]["commits"][sha] = commit
        return sha

    def regular_entry(self, data: bytes) -> Entry:
        return {"sha256": self.put_blob(data), "size": len(data), "lfs": False, "oid": git_oid(data)}


class HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], store: Store, token: str | None, **kw: Any) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.store, self.token = store, token
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.inline_all: bool = kw.get("inline_all", False)
        self.secret: bytes = kw.get("secret", b"")
        self.origin_url: str = kw.get("origin_url", "")

    def sign(self, action: str, oid: str) -> str:
        return hmac.new(self.secret, f"{action}:{oid}".encode(), hashlib.sha256).hexdigest()


class BaseHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HubHTTPServer
    _body: bytes | None = None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if os.environ.get("HUB_SERVER_LOG"):
            sys.stderr.write(f"[hub {self.server.server_address[1]}] {format % args}\n")

    def body(self) -> bytes:
        """The request body (read once; Content-Length or chunked)."""
        if self._body is None:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                self._body = b"".join(chunks)
            else:
                self._body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return self._body

    def json_body(self) -> Any:
        try:
            return json.loads(self.body() or b"{}")
        except json.JSONDecodeError as e:
            raise HubError(400, None, f"Invalid JSON body: {e}") from e

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.body()  # drain what the client sent, or the next request on this connection breaks
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def reply_json(self, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.reply(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

    def reply_error(self, err: HubError) -> None:
        headers = {"X-Error-Message": err.message}
        if err.code:
            headers["X-Error-Code"] = err.code
        if err.commit:
            headers["X-Repo-Commit"] = err.commit
        self.reply_json({"error": err.message}, err.status, headers)

    def serve_blob(self, sha256: str, headers: dict[str, str]) -> None:
        """Send a stored blob, honouring a single ``Range: bytes=a-b`` request."""
        path = self.server.store.blob_path(sha256)
        size = path.stat().st_size
        start, end, status = 0, size - 1, 200
        rng = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if rng and (rng[1] or rng[2]):
            if rng[1]:
                start, end = int(rng[1]), min(int(rng[2]), size - 1) if rng[2] else size - 1
            else:
                start = max(0, size - int(rng[2]))
            if start >= size or start > end:
                self.reply(416, b"", {"Content-Range": f"bytes */{size}", **headers})
                return
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{end}/{size}"}
        length = end - start + 1
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes", **headers}
        self.reply(status, b"", {**headers, "Content-Length": str(length)})
        if self.command == "GET":
            with path.open("rb") as f:
                f.seek(start)
                while length > 0 and (chunk := f.read(min(length, 1 << 20))):
                    self.wfile.write(chunk)
                    length -= len(chunk)

    def dispatch(self) -> None:
        self._body = None  # one handler serves every request of a keep-alive connection
        try:
            self.route(urlsplit(self.path))
        except HubError as err:
            self.reply_error(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug in the emulator: answer 500 and show it
            print(f"hub_server: {self.command} {self.path}: {exc!r}", file=sys.stderr, flush=True)
            self.reply_error(HubError(500, None, f"Internal error: {exc!r}"))

    def route(self, url: Any) -> None:
        raise NotImplementedError

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = dispatch


class OriginHandler(BaseHandler):
    """The large-file origin (an S3/CDN stand-in): signed URLs, never an Authorization header."""

    def route(self, url: Any) -> None:
        if "Authorization" in self.headers:
            raise HubError(403, None, "Authorization header is not accepted by the storage origin")
        match = re.fullmatch(r"/lfs/([0-9a-f]{64})", url.path)
        sig = parse_qs(url.query).get("sig", [""])[0]
        action = "upload" if self.command == "PUT" else "download"
        if not match or self.command not in ("GET", "HEAD", "PUT"):
            raise HubError(404, None, f"No such object: {self.command} {url.path}")
        if not hmac.compare_digest(sig, self.server.sign(action, match[1])):
            raise HubError(403, None, "Bad or missing URL signature")
        if self.command == "PUT":
            if hashlib.sha256(self.body()).hexdigest() != match[1]:
                raise HubError(400, None, "Uploaded content does not match its sha256 oid")
            self.server.store.put_blob(self.body())
            self.reply(200)
        elif self.server.store.blob_size(match[1]) is None:
            raise HubError(404, None, "No such object")
        else:
            self.serve_blob(match[1], {"ETag": f'"{match[1]}"'})


class ApiHandler(BaseHandler):
    """The Hub API and the ``resolve`` endpoint."""

    def check_auth(self, write: bool) -> None:
        token, header = self.server.token, self.headers.get("Authorization")
        if token is None:
            return
        if header is not None and header != f"Bearer {token}":
            raise HubError(401, None, "Invalid credentials in Authorization header")
        if write and header is None:
            raise HubError(401, None, "Invalid username or password.")

    def route(self, url: Any) -> None:
        path, query, cmd = url.path, parse_qs(url.query), self.command
        write = cmd in ("POST", "PUT", "DELETE") and path not in ("/api/validate-yaml",)
        self.check_auth(write)
        if m := API_RE.match(path):
            self.api(cmd, f"{m['rtype']}/{m['repo']}", m["rest"] or "", query)
        elif (m := RESOLVE_RE.match(path)) and cmd in ("GET", "HEAD"):
            self.resolve(f"{m['rtype'] or 'models'}/{m['repo']}", m["rev"], unquote(m["path"]))
        elif (m := LFS_RE.match(path)) and cmd == "POST":
            key = f"{m['rtype'] or 'models'}/{m['repo']}"
            self.lfs_batch(key) if m["op"] == "batch" else self.lfs_verify(key)
        elif path == "/api/repos/create" and cmd == "POST":
            self.create_repo()
        elif path == "/api/repos/delete" and cmd == "DELETE":
            body = self.json_body()
            key = f"{body.get('type') or 'model'}s/{body.get('organization') or USER}/{body.get('name')}"
            with self.server.store.lock:
                self.server.store.repo(key)
                del self.server.store.repos[key]
                (self.server.store.root / "repos" / f"{key}.json").unlink()
            self.reply_json({})
        elif path == "/api/whoami-v2" and cmd == "GET":
            if "Authorization" not in self.headers:
                raise HubError(401, None, "Invalid username or password.")
            auth = {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}
            self.reply_json({"type": "user", "id": "0" * 24, "name": USER, "fullname": USER, "orgs": [], "auth": auth})
        elif path == "/api/validate-yaml" and cmd == "POST":
            self.reply_json({"errors": [], "warnings": []})
        else:
            self.no_route()

    def no_route(self) -> NoReturn:
        """Unknown request: 404, and a line on stderr (tests assert there is none)."""
        hint = " (Xet is not emulated: set HF_HUB_DISABLE_XET=1 or use --inline-all)" if "xet" in self.path else ""
        print(f"hub_server: no route for {self.command} {self.path}{hint}", file=sys.stderr, flush=True)
        raise HubError(404, None, f"No route for {self.command} {self.path}{hint}")

    def create_repo(self) -> None:
        body, store = self.json_body(), self.server.store
        rtype = body.get("type") or "model"
        repo_id = f"{body.get('organization') or USER}/{body.get('name', '')}"
        if rtype not in ("model", "dataset", "space") or not re.fullmatch(REPO_RE, repo_id):
            raise HubError(400, None, f"Invalid repo type or name: {rtype} {repo_id}")
        prefix = "" if rtype == "model" else f"{rtype}s/"
        reply = {"url": f"{self.server.url}/{prefix}{repo_id}", "name": repo_id, "id": repo_id}
        key = f"{rtype}s/{repo_id}"
        with store.lock:
            if key in store.repos:
                self.reply_json({**reply, "error": "You already created this repo"}, 409)
                return
            store.repos[key] = {"created": now_iso(), "commits": {}, "branches": {}, "tags": {}}
            files = {".gitattributes": store.regular_entry(GITATTRIBUTES)}
            store.repos[key]["branches"]["main"] = store.add_commit(key, None, files, "initial commit", "")
            store.save(key)
        self.reply_json(reply)

    def api(self, cmd: str, key: str, rest: str, query: dict[str, list[str]]) -> None:
        store = self.server.store
        action, _, arg = rest.lstrip("/").partition("/")
        with store.lock:
            repo = store.repo(key)
            if cmd == "GET" and action in ("", "revision"):
                self.repo_info(key, store.resolve(key, arg or "main"))
            elif cmd == "GET" and action == "tree":
                rev, _, sub = arg.partition("/")
                self.tree(key, store.resolve(key, rev), unquote(sub).strip("/"), query)
            elif cmd == "GET" and action == "refs":
                heads, tags_ = repo["branches"].items(), repo["tags"].items()
                branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in heads]
                tags = [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": t["sha"]} for n, t in tags_]
                self.reply_json({"branches": branches, "tags": tags, "converts": [], "pullRequests": []})
            elif cmd == "GET" and action == "commits":
                sha: str | None = store.resolve(key, arg or "main")
                history = []
                while sha is not None:
                    c = repo["commits"][sha]
                    fields = {k: c[k] for k in ("title", "message", "date")}
                    history.append({"id": sha, **fields, "authors": [{"user": USER}]})
                    sha = c["parent"]
                self.reply_json(history)
            elif cmd == "POST" and action == "preupload":
                self.preupload(key, store.resolve(key, arg))
            elif cmd == "POST" and action == "commit":
                self.commit(key, unquote(arg), query)
            elif action == "branch" and cmd in ("POST", "DELETE"):
                self.branch(key, unquote(arg))
            elif action == "tag" and cmd in ("POST", "DELETE"):
                self.tag(key, arg)
            else:
                self.no_route()

    def repo_info(self, key: str, sha: str) -> None:
        repo, siblings = self.server.store.repos[key], []
        for path, e in sorted(repo["commits"][sha]["files"].items()):
            sibling: dict[str, Any] = {"rfilename": path, "size": e["size"], "blobId": e["oid"]}
            if e["lfs"]:
                pointer_size = len(lfs_pointer(e["sha256"], e["size"]))
                sibling["lfs"] = {"sha256": e["sha256"], "size": e["size"], "pointerSize": pointer_size}
            siblings.append(sibling)
        repo_id = key.split("/", 1)[1]
        info = {"_id": sha[:24], "id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0], "sha": sha}
        info |= {"lastModified": repo["commits"][sha]["date"], "createdAt": repo["created"], "private": False}
        info |= {"gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings}
        self.reply_json(info)

    def tree(self, key: str, sha: str, sub: str, query: dict[str, list[str]]) -> None:
        files = self.server.store.repos[key]["commits"][sha]["files"]
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = f"{sub}/" if sub else ""
        entries: dict[str, dict[str, Any]] = {}
        for path, e in sorted(files.items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            depths = range(1, len(parts)) if recursive else [1] if len(parts) > 1 else []
            for depth in depths:
                folder = prefix + "/".join(parts[:depth])
                oid = hashlib.sha1(f"{sha}:{folder}".encode()).hexdigest()
                entries.setdefault(folder, {"type": "directory", "oid": oid, "size": 0, "path": folder})
            if recursive or len(parts) == 1:
                entry: dict[str, Any] = {"type": "file", "oid": e["oid"], "size": e["size"], "path": path}
                if e["lfs"]:
                    pointer_size = len(lfs_pointer(e["sha256"], e["size"]))
                    entry["lfs"] = {"oid": e["sha256"], "size": e["size"], "pointerSize": pointer_size}
                entries[path] = entry
        if sub and not entries:
            raise HubError(404, "EntryNotFound", f"{sub} does not exist on {sha}", sha)
        self.reply_json(list(entries.values()))

    def preupload(self, key: str, sha: str) -> None:
        files = self.server.store.repos[key]["commits"][sha]["files"]
        answers = []
        for f in self.json_body().get("files", []):
            lfs = not self.server.inline_all and (
                f["path"].endswith(LFS_SUFFIXES) or f.get("size", 0) >= LFS_THRESHOLD
            )
            old = files.get(f["path"])
            oid = None if old is None or old["lfs"] != lfs else old["sha256"] if lfs else old["oid"]
            mode = "lfs" if lfs else "regular"
            answers.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self.reply_json({"files": answers, "commitOid": sha})

    def commit(self, key: str, branch: str, query: dict[str, list[str]]) -> None:
        store, repo = self.server.store, self.server.store.repos[key]
        if query.get("create_pr", ["0"])[0] not in ("0", "false", ""):
            raise HubError(400, None, "Pull requests are not emulated by this test server")
        if branch not in repo["branches"]:
            store.resolve(key, branch)  # 404 RevisionNotFound when it is no revision at all
            raise HubError(400, None, f"Can only commit to a branch, not to {branch!r}")
        head = repo["branches"][branch]
        files: dict[str, Entry] = dict(repo["commits"][head]["files"])
        header: dict[str, Any] = {}
        for line in self.body().splitlines():
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise HubError(400, None, f"Invalid NDJSON line: {e}") from e
            kind, value = item.get("key"), item.get("value", {})
            if kind == "header":
                header = value
                continue
            raw_path = str(value.get("path", ""))
            path = clean_path(raw_path.rstrip("/") if kind == "deletedFolder" else raw_path)
            if kind == "file":
                raw = value.get("content", "")
                data = base64.b64decode(raw) if value.get("encoding") == "base64" else raw.encode()
                files[path] = store.regular_entry(data)
            elif kind == "lfsFile":
                size = store.blob_size(value.get("oid", ""))
                if size is None or value.get("size", size) != size:
                    raise HubError(422, None, f"LFS object {value.get('oid')} for {path} was not uploaded")
                pointer = lfs_pointer(value["oid"], size)
                files[path] = {"sha256": value["oid"], "size": size, "lfs": True, "oid": git_oid(pointer)}
            elif kind == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, "EntryNotFound", f"A file with this name doesn't exist: {path}", head)
            elif kind == "deletedFolder":
                gone = [p for p in files if p.startswith(path + "/")]
                if not gone:
                    raise HubError(404, "EntryNotFound", f"A folder with this name doesn't exist: {path}", head)
                for p in gone:
                    del files[p]
            else:
                raise HubError(400, None, f"Unknown commit operation {kind!r}")
        if header.get("parentCommit") not in (None, head):
            raise HubError(412, None, "A commit has happened since. Please refresh and try again.")
        sha = store.add_commit(key, head, files, header.get("summary") or "commit", header.get("description") or "")
        repo["branches"][branch] = sha
        store.save(key)
        prefix = "" if key.startswith("models/") else key.split("/")[0] + "/"
        url = f"{self.server.url}/{prefix}{key.split('/', 1)[1]}/commit/{sha}"
        reply = {"success": True, "commitOid": sha, "commitUrl": url, "hookOutput": "", "pullRequestUrl": None}
        self.reply_json(reply)

    def branch(self, key: str, name: str) -> None:
        store, repo = self.server.store, self.server.store.repos[key]
        if self.command == "DELETE":
            if repo["branches"].pop(name, None) is None:
                raise HubError(404, "RevisionNotFound", f"Branch {name} not found")
        elif not re.fullmatch(r"[\w][\w./-]*", name) or name.startswith("refs/"):
            raise HubError(400, None, f"Invalid branch name {name!r}")
        elif name in repo["branches"]:
            raise HubError(409, None, f"Branch {name} already exists")
        else:
            repo["branches"][name] = store.resolve(key, self.json_body().get("startingPoint") or "main")
        store.save(key)
        self.reply_json({})

    def tag(self, key: str, arg: str) -> None:
        store, repo = self.server.store, self.server.store.repos[key]
        if self.command == "DELETE":
            if repo["tags"].pop(unquote(arg), None) is None:
                raise HubError(404, "RevisionNotFound", f"Tag {arg} not found")
        else:
            body = self.json_body()
            sha, tag = store.resolve(key, arg), str(body.get("tag", ""))
            if not re.fullmatch(r"[\w][\w./-]*", tag):
                raise HubError(400, None, f"Invalid tag name {tag!r}")
            if tag in repo["tags"]:
                raise HubError(409, None, f"Tag {tag} already exists")
            repo["tags"][tag] = {"sha": sha, "message": body.get("message") or ""}
        store.save(key)
        self.reply_json({})

    def resolve(self, key: str, rev: str, path: str) -> None:
        store = self.server.store
        with store.lock:
            sha = store.resolve(key, rev)
            entry = store.repos[key]["commits"][sha]["files"].get(path)
        if entry is None:
            raise HubError(404, "EntryNotFound", f"{path} does not exist at {rev}", sha)
        headers = {"X-Repo-Commit": sha, "ETag": f'"{entry["oid"]}"'}
        if entry["lfs"]:
            oid = entry["sha256"]
            location = f"{self.server.origin_url}/lfs/{oid}?sig={self.server.sign('download', oid)}"
            headers |= {"X-Linked-Etag": f'"{oid}"', "X-Linked-Size": str(entry["size"]), "Location": location}
            self.reply(302, b"", headers)
        else:
            self.serve_blob(entry["sha256"], headers)

    def lfs_batch(self, key: str) -> None:
        body, store = self.json_body(), self.server.store
        with store.lock:
            store.repo(key)
        if body.get("operation") != "upload":
            raise HubError(400, None, "Only the LFS 'upload' operation is emulated")
        repo_url = self.server.url + "/" + (key.removeprefix("models/"))
        objects = []
        for obj in body.get("objects", []):
            oid, size = str(obj["oid"]), int(obj["size"])
            answer: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if store.blob_size(oid) != size:
                upload = {"href": f"{self.server.origin_url}/lfs/{oid}?sig={self.server.sign('upload', oid)}"}
                verify = {"href": f"{repo_url}.git/info/lfs/objects/verify"}
                answer["actions"] = {"upload": upload, "verify": verify}
            objects.append(answer)
        lfs_json = {"Content-Type": "application/vnd.git-lfs+json"}
        self.reply_json({"transfer": "basic", "objects": objects}, headers=lfs_json)

    def lfs_verify(self, key: str) -> None:
        body = self.json_body()
        if self.server.store.blob_size(str(body.get("oid"))) != body.get("size"):
            raise HubError(404, None, f"LFS object {body.get('oid')} was not uploaded (or has another size)")
        self.reply_json({"success": True})


def serve(root: Path, token: str | None, inline_all: bool) -> None:
    """Run both servers until SIGTERM/SIGINT; print the endpoint line once they listen."""
    store, secret = Store(root), secrets.token_bytes(16)
    origin = HubHTTPServer(OriginHandler, store, token, secret=secret)
    api = HubHTTPServer(ApiHandler, store, token, secret=secret, origin_url=origin.url, inline_all=inline_all)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"HUB_ENDPOINT={api.url}", flush=True)
    try:
        api.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        origin.shutdown()
        api.server_close()
        origin.server_close()


# --------------------------------------------------------------------------------------------- test helpers


@dataclass
class HubServer:
    """A hub server subprocess: ``endpoint`` is what clients get as ``HF_ENDPOINT``."""

    endpoint: str
    token: str | None
    root: Path
    process: subprocess.Popen[str]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def stderr(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.contextmanager
def start_hub_server(tmp_path: Path, token: str | None = None, inline_all: bool = False) -> Iterator[HubServer]:
    """Start ``tests/hub_server.py`` as a subprocess with its storage under ``tmp_path``; stop it on exit."""
    root, log = tmp_path / "hub-root", tmp_path / "hub-server.stderr.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--root", str(root)]
    cmd += ["--token", token] if token else []
    cmd += ["--inline-all"] if inline_all else []
    with log.open("w") as err:
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    lines: queue.Queue[str] = queue.Queue()
    stdout = process.stdout
    assert stdout is not None
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    hub = HubServer("", token, root, process, log)
    try:
        try:
            line = lines.get(timeout=30)
        except queue.Empty:
            line = ""
        if not line.startswith("HUB_ENDPOINT="):
            raise RuntimeError(f"hub server did not start (got {line!r}); stderr:\n{hub.stderr()}")
        hub.endpoint = line.strip().split("=", 1)[1]
        yield hub
    finally:
        hub.stop()


def hub_env(
    endpoint: str,
    hf_home: Path,
    token: str | None,
    *,
    disable_xet: bool = True,
    offline: bool = False,
) -> dict[str, str]:
    """A clean environment for a client subprocess: no inherited HF_*/TRANSFORMERS_*/PYTHONPATH."""
    drop = ("HF_", "HUGGINGFACE_", "HUGGING_FACE_", "TRANSFORMERS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop) and k != "PYTHONPATH"}
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), "127.0.0.1", "localhost"]))
    env |= {"HF_ENDPOINT": endpoint, "HF_HOME": str(hf_home), "HF_HUB_DISABLE_TELEMETRY": "1"}
    env |= {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "NO_PROXY": no_proxy, "no_proxy": no_proxy}
    if token:
        env["HF_TOKEN"] = token
    if disable_xet:
        env["HF_HUB_DISABLE_XET"] = "1"
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def run_client(code: str, env: dict[str, str], cwd: Path, timeout: float = 300, **values: Any) -> Any:
    """Run a client snippet in a fresh ``python -c`` process in ``cwd`` and return what it set as ``RESULT``.

    ``code`` is dedented; it sees ``values`` as the dict ``V`` and must leave a JSON-serialisable ``RESULT``.
    Raises ``AssertionError`` with the process output when it fails.
    """
    prelude = f"import json\nV = json.loads({json.dumps(json.dumps(values))})\nRESULT = None\n"
    script = prelude + textwrap.dedent(code) + "\nprint('\\nRESULT=' + json.dumps(RESULT), flush=True)\n"
    cmd = [sys.executable, "-c", script]
    proc = subprocess.run(
        cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    results = [line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT=")]
    if proc.returncode != 0 or not results:
        raise AssertionError(f"client failed (rc={proc.returncode})\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return json.loads(results[-1])


if pytest is not None:

    @pytest.fixture(scope="session")
    def hub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
        """One hub server for the session, requiring the token ``hf_test_token`` for writes."""
        with start_hub_server(tmp_path_factory.mktemp("hub"), token="hf_test_token") as hub:
            yield hub


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="storage folder (created if missing)")
    parser.add_argument("--token", help="token required (as 'Bearer TOKEN') for every write")
    parser.add_argument("--inline-all", action="store_true", help="answer 'regular' to every preupload")
    args = parser.parse_args()
    serve(args.root, args.token, args.inline_all)
