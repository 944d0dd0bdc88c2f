"""The test Hub server, driven by the real huggingface_hub / transformers clients in subprocesses.

Every client step runs in a fresh ``python -c`` process because the clients read ``HF_ENDPOINT``, ``HF_HOME``,
``HF_HUB_OFFLINE`` and ``HF_HUB_DISABLE_XET`` at import.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from http.client import HTTPConnection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hub_server import HubServer, hub_env, run_client, start_hub_server
from hub_server import hub_server as hub_server  # noqa: F401 - the session fixture

TOKEN = "hf_test_token"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def request(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One raw request that never follows redirects; returns (status, headers, body)."""
    parts = urlsplit(url)
    conn = HTTPConnection(parts.netloc, timeout=30)
    conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), data


def make_repo(hub: HubServer, name: str) -> str:
    auth = {"Authorization": f"Bearer {hub.token}"} if hub.token else {}
    status, _, body = request("POST", f"{hub.endpoint}/api/repos/create", json.dumps({"name": name}).encode(), auth)
    assert status == 200, body
    return f"tester/{name}"


def ndjson(*ops: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(op).encode() + b"\n" for op in ops)


def inline_file(path: str, data: bytes) -> dict[str, Any]:
    return {"key": "file", "value": {"path": path, "encoding": "base64", "content": base64.b64encode(data).decode()}}


def test_protocol_details(hub_server: HubServer) -> None:
    """What clients rely on without saying so: auth rules, error headers, Range, LFS redirects, body draining."""
    ep, auth = hub_server.endpoint, {"Authorization": f"Bearer {TOKEN}"}
    api, create = f"{ep}/api/models/tester/raw", json.dumps({"name": "raw"}).encode()
    assert request("POST", f"{ep}/api/repos/create", create)[0] == 401
    assert request("POST", f"{ep}/api/repos/create", create, {"Authorization": "Bearer wrong"})[0] == 401
    assert request("POST", f"{ep}/api/repos/create", create, auth)[0] == 200
    status, _, body = request("POST", f"{ep}/api/repos/create", create, auth)
    assert status == 409 and json.loads(body)["url"] == f"{ep}/tester/raw"  # exist_ok reads the url from a 409
    status, _, body = request("GET", api)
    head = json.loads(body)["sha"]
    assert status == 200 and len(head) == 40
    assert [f["rfilename"] for f in json.loads(body)["siblings"]] == [".gitattributes"]  # like a new Hub repo
    assert request("GET", f"{ep}/api/whoami-v2")[0] == 401
    assert json.loads(request("GET", f"{ep}/api/whoami-v2", headers=auth)[2])["name"] == "tester"

    # A keep-alive connection survives a rejected request whose body the server did not want.
    conn = HTTPConnection(ep.removeprefix("http://"), timeout=30)
    conn.request("POST", "/api/models/tester/raw/commit/main", body=b"x" * 100_000)
    first = conn.getresponse()
    assert first.status == 401 and first.read()
    conn.request("GET", "/api/models/tester/raw/refs")
    refs = json.loads(conn.getresponse().read())
    assert refs["branches"] == [{"name": "main", "ref": "refs/heads/main", "targetCommit": head}]
    conn.close()

    # LFS: batch -> PUT to the origin (refused with a token) -> verify -> commit; then a 302 to the origin.
    blob, batch_url = os.urandom(300_000), f"{ep}/tester/raw.git/info/lfs/objects/batch"
    oid, lfs_headers = sha256(blob), {**auth, "Content-Type": "application/vnd.git-lfs+json"}
    batch = json.dumps({"operation": "upload", "objects": [{"oid": oid, "size": len(blob)}]}).encode()
    status, _, body = request("POST", batch_url, batch, lfs_headers)
    actions = json.loads(body)["objects"][0]["actions"]
    upload_url, verify_url = actions["upload"]["href"], actions["verify"]["href"]
    assert status == 200 and not upload_url.startswith(ep)
    assert request("PUT", upload_url, blob, auth)[0] == 403
    assert request("PUT", upload_url.replace("sig=", "sig=0"), blob)[0] == 403
    assert request("PUT", upload_url, blob[1:])[0] == 400
    assert request("PUT", upload_url, blob)[0] == 200
    assert request("POST", verify_url, json.dumps({"oid": oid, "size": len(blob)}).encode(), auth)[0] == 200
    assert "actions" not in json.loads(request("POST", batch_url, batch, lfs_headers)[2])["objects"][0]
    text = b"hello world\n" * 100
    header = {"key": "header", "value": {"summary": "raw commit", "parentCommit": head}}
    lfs_file = {"key": "lfsFile", "value": {"path": "weights.bin", "algo": "sha256", "oid": oid, "size": len(blob)}}
    missing = {"key": "lfsFile", "value": {"path": "x.bin", "algo": "sha256", "oid": "0" * 64, "size": 1}}
    ops = [header, lfs_file, inline_file("a/b.txt", text), inline_file("a/c/d.txt", b"d")]
    assert request("POST", f"{api}/commit/main", ndjson(*ops, missing), auth)[0] == 422
    status, _, body = request("POST", f"{api}/commit/main", ndjson(*ops), auth)
    commit = json.loads(body)["commitOid"]
    assert status == 200 and commit != head
    assert request("POST", f"{api}/commit/main", ndjson(*ops), auth)[0] == 412  # stale parentCommit

    status, headers, _ = request("HEAD", f"{ep}/tester/raw/resolve/main/weights.bin", headers=auth)
    assert status == 302 and headers["X-Repo-Commit"] == commit
    assert headers["X-Linked-Etag"] == f'"{oid}"' and headers["X-Linked-Size"] == str(len(blob))
    assert request("GET", headers["Location"], headers=auth)[0] == 403  # a leaked token fails
    assert request("GET", headers["Location"])[2] == blob
    status, _, part = request("GET", headers["Location"], headers={"Range": "bytes=10-19"})
    assert status == 206 and part == blob[10:20]

    status, headers, _ = request("HEAD", f"{ep}/tester/raw/resolve/{commit}/a/b.txt")
    assert status == 200 and headers["Content-Length"] == str(len(text)) and headers["ETag"].startswith('"')
    status, headers, part = request("GET", f"{ep}/tester/raw/resolve/main/a%2Fb.txt", headers={"Range": "bytes=-6"})
    assert status == 206 and part == text[-6:] and headers["Content-Range"] == "bytes 1194-1199/1200"
    assert request("GET", f"{ep}/tester/raw/resolve/main/a/b.txt", headers={"Range": "bytes=5000-"})[0] == 416

    status, headers, _ = request("HEAD", f"{ep}/tester/raw/resolve/main/nope.txt")
    assert status == 404 and headers["X-Error-Code"] == "EntryNotFound" and headers["X-Repo-Commit"] == commit
    assert request("HEAD", f"{ep}/tester/raw/resolve/nope/a/b.txt")[1]["X-Error-Code"] == "RevisionNotFound"
    assert request("HEAD", f"{ep}/tester/nope/resolve/main/a/b.txt")[1]["X-Error-Code"] == "RepoNotFound"
    assert request("GET", f"{api}/tree/main/additional_chat_templates")[1]["X-Error-Code"] == "EntryNotFound"
    tree = json.loads(request("GET", f"{api}/tree/main")[2])
    assert {(e["type"], e["path"]) for e in tree} == {
        ("file", ".gitattributes"),
        ("file", "weights.bin"),
        ("directory", "a"),
    }
    tree = json.loads(request("GET", f"{api}/tree/main/a?recursive=true")[2])
    assert [e["path"] for e in tree] == ["a/b.txt", "a/c", "a/c/d.txt"]
    assert [e["lfs"]["oid"] for e in json.loads(request("GET", f"{api}/tree/main?recursive=1")[2]) if "lfs" in e] == [
        oid
    ]

    # deletedFolder / deletedFile, and a dataset repo (URLs prefixed with datasets/).
    delete = ndjson({"key": "deletedFolder", "value": {"path": "a/"}})
    assert request("POST", f"{api}/commit/main", delete, auth)[0] == 200
    assert [e["path"] for e in json.loads(request("GET", f"{api}/tree/main")[2])] == [".gitattributes", "weights.bin"]
    delete = ndjson({"key": "deletedFile", "value": {"path": "a/b.txt"}})
    assert request("POST", f"{api}/commit/main", delete, auth)[1]["X-Error-Code"] == "EntryNotFound"
    create = json.dumps({"name": "raw-ds", "type": "dataset"}).encode()
    assert (
        json.loads(request("POST", f"{ep}/api/repos/create", create, auth)[2])["url"] == f"{ep}/datasets/tester/raw-ds"
    )
    commit_ds = ndjson(inline_file("data.csv", b"a,b\n1,2\n"))
    assert request("POST", f"{ep}/api/datasets/tester/raw-ds/commit/main", commit_ds, auth)[0] == 200
    assert request("GET", f"{ep}/datasets/tester/raw-ds/resolve/main/data.csv")[2] == b"a,b\n1,2\n"
    assert request("GET", f"{ep}/tester/raw-ds/resolve/main/data.csv")[1]["X-Error-Code"] == "RepoNotFound"


def test_lfs_publish_branch_tag_download_offline(hub_server: HubServer, tmp_path: Path) -> None:
    """upload_folder/create_commit through the LFS batch API (Xet off), pins by branch/tag/sha, errors, offline."""
    folder = tmp_path / "upload"
    (folder / "sub").mkdir(parents=True)
    weights_v1, weights_v2 = os.urandom(1_500_000), os.urandom(1_200_000)
    (folder / "model.safetensors").write_bytes(weights_v1)
    (folder / "notes.txt").write_text("version 1\n")
    (folder / "sub" / "extra.txt").write_text("extra\n")
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# Demo\n")
    (tmp_path / "model_v2.safetensors").write_bytes(weights_v2)
    env = hub_env(hub_server.endpoint, tmp_path / "hf_publisher", TOKEN)

    published = run_client(
        """
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
        api = HfApi()
        repo = api.create_repo("tester/lfs-demo").repo_id
        assert api.create_repo("tester/lfs-demo", exist_ok=True).repo_id == repo
        c1 = api.upload_folder(repo_id=repo, folder_path=V["folder"], commit_message="v1").oid
        lfs = {f.path: f.lfs is not None for f in api.list_repo_tree(repo, recursive=True) if hasattr(f, "lfs")}
        api.create_branch(repo, branch="dev")
        api.create_tag(repo, tag="v1", revision=c1, tag_message="first")
        c2 = api.create_commit(repo, commit_message="v2", operations=[
            CommitOperationAdd("model.safetensors", V["weights_v2"]),
            CommitOperationAdd("notes.txt", b"version 2\\n"),
            CommitOperationDelete("sub/extra.txt"),
        ]).oid
        refs = api.list_repo_refs(repo)
        RESULT = {
            "c1": c1, "c2": c2, "lfs": lfs,
            "branches": {b.name: b.target_commit for b in refs.branches},
            "tags": {t.name: t.target_commit for t in refs.tags},
            "v1_sha": api.model_info(repo, revision="v1").sha,
            "commits": [c.title for c in api.list_repo_commits(repo)],
            "files_main": sorted(api.list_repo_files(repo)),
        }
        """,
        env,
        tmp_path,
        folder=str(folder),
        weights_v2=str(tmp_path / "model_v2.safetensors"),
    )
    c1, c2 = published["c1"], published["c2"]
    assert c1 != c2 and len(c1) == len(c2) == 40
    assert published["lfs"] == {
        ".gitattributes": False,
        "README.md": False,
        "model.safetensors": True,
        "notes.txt": False,
        "sub/extra.txt": False,
    }
    assert published["branches"] == {"main": c2, "dev": c1} and published["tags"] == {"v1": c1}
    assert published["v1_sha"] == c1 and published["commits"] == ["v2", "v1", "initial commit"]
    assert published["files_main"] == [".gitattributes", "README.md", "model.safetensors", "notes.txt"]

    consumer_env = hub_env(hub_server.endpoint, tmp_path / "hf_consumer", TOKEN)
    download_code = """
        import hashlib
        from pathlib import Path
        from huggingface_hub import errors, hf_hub_download, snapshot_download
        HUB_ERRORS = (errors.RepositoryNotFoundError, errors.RevisionNotFoundError, errors.EntryNotFoundError)
        def fetch(rev, name):
            return Path(hf_hub_download("tester/lfs-demo", name, revision=rev)).read_bytes()
        def error(**kw):
            try:
                hf_hub_download(**{"repo_id": "tester/lfs-demo", "filename": "notes.txt", **kw})
            except Exception as e:
                return [type(e).__name__, isinstance(e, HUB_ERRORS)]
            return None
        snap = Path(snapshot_download("tester/lfs-demo", revision="v1"))
        RESULT = {
            "model": {rev: hashlib.sha256(fetch(rev, "model.safetensors")).hexdigest() for rev in V["revs"]},
            "notes": {rev: fetch(rev, "notes.txt").decode() for rev in V["revs"]},
            "snapshot": sorted(p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file()),
            "snapshot_model": hashlib.sha256((snap / "model.safetensors").read_bytes()).hexdigest(),
            "errors": [error(repo_id="tester/missing"), error(revision="nope"), error(filename="missing.txt")],
        }
    """
    revs = ["main", "dev", "v1", c1, c2]
    got = run_client(download_code, consumer_env, tmp_path, revs=revs)
    expected_model = {"main": sha256(weights_v2), "dev": sha256(weights_v1), "v1": sha256(weights_v1)}
    expected_model |= {c1: sha256(weights_v1), c2: sha256(weights_v2)}
    assert got["model"] == expected_model
    assert got["notes"] == {
        "main": "version 2\n",
        "dev": "version 1\n",
        "v1": "version 1\n",
        c1: "version 1\n",
        c2: "version 2\n",
    }
    assert got["snapshot"] == [".gitattributes", "README.md", "model.safetensors", "notes.txt", "sub/extra.txt"]
    assert got["snapshot_model"] == sha256(weights_v1)
    assert got["errors"] == [
        ["RepositoryNotFoundError", True],
        ["RevisionNotFoundError", True],
        ["RemoteEntryNotFoundError", True],
    ]

    # Offline: the warm cache serves every pin; a file never downloaded fails without touching the network.
    offline_env = hub_env(hub_server.endpoint, tmp_path / "hf_consumer", None, offline=True)
    offline = run_client(
        download_code.replace('"errors": [', '"errors": [error(filename="README.md", revision="main"), '),
        offline_env,
        tmp_path,
        revs=revs,
    )
    assert offline["model"] == expected_model and offline["snapshot_model"] == sha256(weights_v1)
    assert offline["errors"][0] == ["LocalEntryNotFoundError", True]  # an EntryNotFoundError subclass


def test_writes_need_the_token(hub_server: HubServer, tmp_path: Path) -> None:
    """Without HF_TOKEN a write gets HTTP 401 (reads stay public); a wrong token is refused everywhere."""
    repo = make_repo(hub_server, "guarded")
    env = hub_env(hub_server.endpoint, tmp_path / "hf", token=None)
    assert "HF_TOKEN" not in env
    got = run_client(
        """
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError
        def status(call):
            try:
                call()
            except HfHubHTTPError as e:
                return e.response.status_code
            return 200
        api, wrong = HfApi(), HfApi(token="hf_wrong")
        RESULT = {
            "upload": status(lambda: api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=V["repo"])),
            "create": status(lambda: api.create_repo("tester/not-allowed")),
            "branch": status(lambda: api.create_branch(V["repo"], branch="dev")),
            "read": status(lambda: api.model_info(V["repo"])),
            "wrong_token_read": status(lambda: wrong.model_info(V["repo"])),
            "files": api.list_repo_files(V["repo"]),
        }
        """,
        env,
        tmp_path,
        repo=repo,
    )
    assert got == {
        "upload": 401,
        "create": 401,
        "branch": 401,
        "read": 200,
        "wrong_token_read": 401,
        "files": [".gitattributes"],
    }


def test_inline_all_mode_with_xet_enabled(tmp_path: Path) -> None:
    """With --inline-all every file goes inline in the commit, so a client with Xet enabled still publishes.

    Also: no token configured means no auth at all, and the repos survive a server restart.
    """
    weights = os.urandom(1_000_000)
    (tmp_path / "model.safetensors").write_bytes(weights)
    with start_hub_server(tmp_path, inline_all=True) as hub:
        env = hub_env(hub.endpoint, tmp_path / "hf", None, disable_xet=False)
        assert "HF_HUB_DISABLE_XET" not in env
        got = run_client(
            """
            import hashlib, importlib.util
            from pathlib import Path
            from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
            from huggingface_hub import snapshot_download
            api = HfApi()
            repo = api.create_repo("tester/inline").repo_id
            sha = api.upload_file(path_or_fileobj=V["weights"], path_in_repo="model.safetensors", repo_id=repo).oid
            url = hf_hub_url(repo, "model.safetensors")
            meta = get_hf_file_metadata(url)
            snap = Path(snapshot_download(repo))
            RESULT = {
                "xet": importlib.util.find_spec("hf_xet") is not None and not constants.HF_HUB_DISABLE_XET,
                "lfs": [f.path for f in api.list_repo_tree(repo) if getattr(f, "lfs", None)],
                "redirected": meta.location != url, "commit": meta.commit_hash == sha, "size": meta.size,
                "download": hashlib.sha256(Path(hf_hub_download(repo, "model.safetensors")).read_bytes()).hexdigest(),
                "snapshot": sorted(p.name for p in snap.iterdir()),
            }
            """,
            env,
            tmp_path,
            weights=str(tmp_path / "model.safetensors"),
        )
        assert "hub_server:" not in hub.stderr()
    with start_hub_server(tmp_path, inline_all=True) as hub:  # state survives a restart on the same root
        assert request("GET", f"{hub.endpoint}/tester/inline/resolve/main/model.safetensors")[2] == weights
    assert got == {
        "xet": True,
        "lfs": [],
        "redirected": False,
        "commit": True,
        "size": len(weights),
        "download": sha256(weights),
        "snapshot": [".gitattributes", "model.safetensors"],
    }


TINY_CONFIG_CODE = """
from transformers import PretrainedConfig


class TinyRemoteConfig(PretrainedConfig):
    model_type = "tiny-remote"

    def __init__(self, width=4, **kwargs):
        self.width = width
        super().__init__(**kwargs)
"""


def test_transformers_push_to_hub_and_from_pretrained(hub_server: HubServer, tmp_path: Path) -> None:
    """push_to_hub of a tiny BertModel + tokenizer, then Auto*.from_pretrained at main, branch, tag and sha.

    Also loads a config through remote code (``auto_map`` + ``trust_remote_code=True``) and reloads every pin
    with ``local_files_only=True`` from the warm cache.
    """
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "configuration_tiny.py").write_text(TINY_CONFIG_CODE)
    auto_map = {"AutoConfig": "configuration_tiny.TinyRemoteConfig"}
    (remote / "config.json").write_text(json.dumps({"model_type": "tiny-remote", "width": 7, "auto_map": auto_map}))
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]))
    published = run_client(
        """
        import torch
        from huggingface_hub import HfApi
        from transformers import BertConfig, BertModel, BertTokenizer
        repo, ids = "tester/tiny-bert", torch.tensor([[2, 5, 6, 3]])
        config = BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, vocab_size=99
        )
        def make(seed):
            torch.manual_seed(seed)
            model = BertModel(config).eval()
            with torch.no_grad():
                return model, model(ids).last_hidden_state[0, :, 0].tolist()
        model, out_v1 = make(0)
        c1 = model.push_to_hub(repo).oid
        BertTokenizer(vocab=V["vocab"]).push_to_hub(repo)
        HfApi().create_tag(repo, tag="v1")
        model2, out_dev = make(1)
        model2.push_to_hub(repo, revision="dev")
        model3, out_main = make(2)
        model3.push_to_hub(repo)
        HfApi().create_repo("tester/tiny-remote")
        HfApi().upload_folder(repo_id="tester/tiny-remote", folder_path=V["remote"])
        files = sorted(HfApi().list_repo_files(repo))
        RESULT = {"c1": c1, "out_v1": out_v1, "out_dev": out_dev, "out_main": out_main, "files": files}
        """,
        hub_env(hub_server.endpoint, tmp_path / "hf_publisher", TOKEN),
        tmp_path,
        vocab=str(tmp_path / "vocab.txt"),
        remote=str(remote),
    )
    assert {"config.json", "model.safetensors", "README.md", "tokenizer_config.json"} <= set(published["files"])
    v1, dev, main = published["out_v1"], published["out_dev"], published["out_main"]
    assert v1 != dev and v1 != main and dev != main

    got = run_client(
        """
        import torch
        from transformers import AutoConfig, AutoModel, AutoProcessor, AutoTokenizer
        repo, ids = "tester/tiny-bert", torch.tensor([[2, 5, 6, 3]])
        def run(rev, **kwargs):
            model = AutoModel.from_pretrained(repo, revision=rev, **kwargs).eval()
            with torch.no_grad():
                return model(ids).last_hidden_state[0, :, 0].tolist()
        remote = AutoConfig.from_pretrained("tester/tiny-remote", trust_remote_code=True)
        RESULT = {
            "outputs": {rev: run(rev) for rev in V["revs"]},
            "tokens": AutoTokenizer.from_pretrained(repo, revision="v1")("hello world")["input_ids"],
            "processor": AutoProcessor.from_pretrained(repo)("hello")["input_ids"],
            "remote": [type(remote).__module__, remote.width],
        }
        RESULT["cached"] = {rev: run(rev, local_files_only=True) for rev in V["revs"]}
        """,
        hub_env(hub_server.endpoint, tmp_path / "hf_consumer", TOKEN),
        tmp_path,
        revs=["main", "v1", published["c1"], "dev"],
    )
    expected = {"main": main, "v1": v1, published["c1"]: v1, "dev": dev}
    assert got["outputs"].keys() == got["cached"].keys() == expected.keys()
    for rev, values in expected.items():
        assert got["outputs"][rev] == pytest.approx(values, abs=1e-5), rev
        assert got["cached"][rev] == got["outputs"][rev], rev
    assert got["tokens"] == [2, 5, 6, 3] and got["processor"] == [2, 5, 3]
    assert got["remote"][0].startswith("transformers_modules.") and got["remote"][1] == 7
    assert "hub_server:" not in hub_server.stderr()
