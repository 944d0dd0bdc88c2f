"""Publish MMFNet to a Hub (the test server) and load it back, with the real clients over real HTTP.

Each publisher / consumer is a fresh subprocess (the clients read HF_ENDPOINT, HF_HOME, HF_HUB_OFFLINE and
HF_HUB_DISABLE_XET at import) with its own HF_HOME. Consumers of the remote-code path run where
`modeling_mmfnet` cannot be imported. Checkpoints and reference outputs are built in the pytest process.
"""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import BLOCK_PACKAGE, SHIPPED_CODE_FILES, tiny_conv, tiny_processor
from hub_server import HubServer, hub_env, run_client, start_hub_server
from hub_server import hub_server as hub_server  # noqa: F401 - the session fixture
from huggingface_hub import ModelCard
from PIL import Image

import modeling_mmfnet as mm

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_test_token"
SHIPPED = SHIPPED_CODE_FILES
PROCESSOR_FILES = {"processing_mmfnet.py", "processor_config.json", "tokenizer.json", "tokenizer_config.json"}

CONSUMER = """
import hashlib, io, json, sys
from pathlib import Path
import torch
from PIL import Image
from huggingface_hub import HfApi, hf_hub_download
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoProcessor

torch.set_num_threads(min(2, torch.get_num_threads()))  # as in the pytest process: same kernels, same bits
sys.stdin = io.StringIO()  # a non-interactive user: transformers must not wait at its trust_remote_code prompt
REF = torch.load(V["reference"])
REPO = V["repo"]
TRUST = {"trust_remote_code": True} if V["remote"] else {}


def process(processor):
    raw = REF["raw"]
    return processor(
        images=[None if x is None else Image.fromarray(x.numpy()) for x in raw["images"]],
        text=raw["text"],
        audio=[None if x is None else x.numpy() for x in raw["audio"]],
        sampling_rate=raw["sampling_rate"],
    )


def load(rev, **kwargs):
    '''Every Auto class at `rev`; which reference version its outputs equal (bit for bit).'''
    config = AutoConfig.from_pretrained(REPO, revision=rev, **TRUST, **kwargs)
    processor = AutoProcessor.from_pretrained(REPO, revision=rev, **TRUST, **kwargs)
    head = AutoModelForSequenceClassification.from_pretrained(REPO, revision=rev, **TRUST, **kwargs).eval()
    base = AutoModel.from_pretrained(REPO, revision=rev, **TRUST, **kwargs).eval()
    inputs = process(processor)
    with torch.no_grad():
        logits, fused = head(**inputs).logits, base(**inputs).fused_embeds
    weights = hf_hub_download(REPO, "model.safetensors", revision=rev, **kwargs)
    objects = (config, config.vision_config, processor, head, head.mmfnet.vision_model, base)
    return {
        "inputs_equal": sorted(inputs) == sorted(REF["inputs"])
        and all(torch.equal(inputs[k], REF["inputs"][k]) for k in inputs),
        "logits": [i for i, ref in enumerate(REF["logits"]) if torch.equal(logits, ref)],
        "fused": [i for i, ref in enumerate(REF["fused"]) if torch.equal(fused, ref)],
        "modules": sorted({type(o).__module__.split(".")[0] for o in objects}),
        "classes": [type(o).__name__ for o in objects],
        "sha256": hashlib.sha256(Path(weights).read_bytes()).hexdigest(),
        "card": Path(hf_hub_download(REPO, "README.md", revision=rev)).read_text(),
    }


def error_of(call):
    try:
        call()
    except Exception as error:
        cause = error.__cause__
        return {"types": [c.__name__ for c in type(error).__mro__], "message": str(error),
                "cause": type(cause).__name__ if cause is not None else None}
    return None
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def consumer(remote: bool) -> str:
    return (BLOCK_PACKAGE if remote else "") + CONSUMER


@pytest.fixture(scope="module")
def checkpoints(encoder_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Four versions of one tiny classifier (seed-CNN vision, BERT text, wav2vec2 audio) with its processor,
    each saved with its real metrics on a reference batch; the references for the consumers."""
    root = tmp_path_factory.mktemp("checkpoints")
    processor = tiny_processor(encoder_dirs)
    generator = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (8, 8), dtype=torch.uint8, generator=generator) for _ in range(4)]
    audio = [torch.randn(800, generator=generator) for _ in range(4)]
    raw = {
        "images": [images[0], None, images[2], images[3]],
        "text": ["one", "two", None, "three four"],
        "audio": [audio[0], audio[1], audio[2], None],
        "sampling_rate": 8000,
    }
    inputs = processor(
        images=[None if x is None else Image.fromarray(x.numpy()) for x in raw["images"]],
        text=raw["text"],
        audio=[None if x is None else x.numpy() for x in raw["audio"]],
        sampling_rate=8000,
    )
    labels = torch.tensor([0, 1, 2, 3])
    torch.manual_seed(0)
    first = mm.MMFNetForClassification.from_encoders_pretrained(
        vision=tiny_conv(), text=str(encoder_dirs["bert"]), audio=str(encoder_dirs["wav2vec2"]),
        fusion_type="transformer", fusion_dim=32, fusion_hidden_dim=64, num_labels=4,
        id2label={i: w for i, w in enumerate(["zero", "one", "two", "three"])},
        label2id={w: i for i, w in enumerate(["zero", "one", "two", "three"])},
    )  # fmt: skip
    folders, logits, fused = [], [], []
    for version in range(4):
        model = copy.deepcopy(first)
        with torch.no_grad():
            for parameter in model.parameters():  # every version differs in every tensor
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
            out = model(**inputs, labels=labels)
        folder = root / f"v{version + 1}"
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        accuracy = (out.logits.argmax(-1) == labels).float().mean().item()
        (folder / "mmfnet_results.json").write_text(
            json.dumps({"test_accuracy": accuracy, "test_loss": out.loss.item()})
        )
        folders.append(folder)
        logits.append(out.logits)
        fused.append(out.fused_embeds)
    assert all(not torch.equal(logits[i], logits[j]) for i in range(4) for j in range(i))
    torch.save({"raw": raw, "inputs": dict(inputs), "logits": logits, "fused": fused}, root / "reference.pt")
    return {"folders": folders, "reference": root / "reference.pt"}


PUBLISH_WITH_PUSH_TO_HUB = """
import json, sys
from pathlib import Path
sys.path.insert(0, V["root"])  # the package under test
from huggingface_hub import HfApi, ModelCard
import modeling_mmfnet as mm

api, repo, folders = HfApi(), V["repo"], V["folders"]


def push(i, **kwargs):
    return mm.MMFNetForClassification.from_pretrained(folders[i]).push_to_hub(repo, **kwargs).oid


push(0)
mm.MMFNetProcessor.from_pretrained(folders[0]).push_to_hub(repo)
ModelCard(mm.generate_model_card(folders[0], repo_id=repo)).push_to_hub(repo)
api.create_tag(repo, tag="v1")
c2 = push(1)
api.create_branch(repo, branch="dev")
push(2, revision="dev")
push(3)  # main; each push updates the card with the pushed checkpoint's own results

# a branch whose latest commit holds truncated weights
api.create_branch(repo, branch="broken")
weights = Path(folders[3], "model.safetensors").read_bytes()
api.upload_file(path_or_fileobj=weights[: len(weights) // 2], path_in_repo="model.safetensors", repo_id=repo,
                revision="broken")
# a repo whose config.json has no auto_map
config = json.loads(Path(folders[3], "config.json").read_text())
del config["auto_map"]
api.create_repo(V["no_auto_map"])
api.upload_file(path_or_fileobj=json.dumps(config).encode(), path_in_repo="config.json", repo_id=V["no_auto_map"])
RESULT = {"c2": c2, "tree": {f.path: f.lfs is not None for f in api.list_repo_tree(repo) if hasattr(f, "lfs")}}
"""

PUBLISH_WITH_SCRIPT = """
import sys
from huggingface_hub import HfApi
sys.path[:0] = [V["examples"], V["root"]]
import publish

folders, repo = V["folders"], V["repo"]


def publish_version(i, *args):
    return publish.main([folders[i], "--repo_id", repo, "--dataset", "tester/tiny-avdigits", *args]).oid


publish_version(0, "--tag", "v1", "--commit_message", "first version")
c2 = publish_version(1)
publish_version(2, "--revision", "dev")
publish_version(3)
api = HfApi()
tree = {f.path: f.lfs is not None for f in api.list_repo_tree(repo) if hasattr(f, "lfs")}
RESULT = {"c2": c2, "tree": tree, "commits": [c.title for c in api.list_repo_commits(repo)]}
"""

REMOTE_CONSUMER = """
RESULT = {"pins": {rev: load(rev) for rev in V["revs"]}}
RESULT["config"] = json.loads(Path(hf_hub_download(REPO, "config.json")).read_text())
RESULT["processor_config"] = json.loads(Path(hf_hub_download(REPO, "processor_config.json")).read_text())
if V["errors"]:
    errors = RESULT["errors"] = {
        "untrusted": error_of(lambda: AutoModel.from_pretrained(REPO)),
        "missing_repo": error_of(lambda: AutoModel.from_pretrained("tester/no-such-model", trust_remote_code=True)),
        "missing_revision": error_of(lambda: AutoModel.from_pretrained(REPO, revision="no-such-branch", **TRUST)),
        "no_auto_map": error_of(lambda: AutoModel.from_pretrained(V["no_auto_map"], trust_remote_code=True)),
        "corrupt_on_hub": error_of(lambda: load("broken")),
    }
    # the maintainer re-uploads good weights: a fresh attempt at the same branch works
    HfApi().upload_file(path_or_fileobj=V["good_weights"], path_in_repo="model.safetensors", repo_id=REPO,
                        revision="broken")
    RESULT["fixed_on_hub"] = load("broken")
    # a truncated blob in the local cache: a clear error, and force_download=True repairs the cache
    blob = Path(hf_hub_download(REPO, "model.safetensors")).resolve()
    blob.write_bytes(blob.read_bytes()[:1000])
    errors["corrupt_in_cache"] = error_of(lambda: load("main"))
    RESULT["force_download"] = load("main", force_download=True)
"""


def check_pins(pins: dict[str, dict], expected: dict[str, int], shas: list[str], modules: list[str]) -> None:
    assert pins.keys() == expected.keys()
    for rev, version in expected.items():
        got = pins[rev]
        assert got["inputs_equal"], rev
        assert got["logits"] == [version] and got["fused"] == [version], (rev, got["logits"], got["fused"])
        assert got["modules"] == modules, (rev, got["modules"])
        assert got["classes"] == [
            "MMFNetConfig",
            "MMFNetConvConfig",
            "MMFNetProcessor",
            "MMFNetForSequenceClassification",
            "MMFNetConvModel",
            "MMFNetModel",
        ]
        assert got["sha256"] == shas[version], rev


def card_metrics(card: str) -> dict[tuple[str, str], float]:
    """`{(metric name, split): value}` from the card's YAML model-index."""
    return {(r.metric_name, r.dataset_split): r.metric_value for r in ModelCard(card).data.eval_results or []}


def expected_card_metrics(folder: Path) -> dict[tuple[str, str], float]:
    results = json.loads((folder / "mmfnet_results.json").read_text())
    return {
        ("test accuracy (all modalities)", "test"): results["test_accuracy"],
        ("test loss (all modalities)", "test"): results["test_loss"],
    }


@pytest.mark.parametrize("mode", ["lfs", "inline"])
def test_publish_and_load_at_every_pin(
    mode: str, checkpoints: dict[str, Any], hub_server: HubServer, tmp_path: Path
) -> None:
    """Publish four versions (push_to_hub over LFS with Xet off / publish.py with every file inline), then load
    them without the package at main, a branch, a tag and a commit sha, online and from the warm cache offline.

    LFS mode also checks the installed-package path and the errors users meet.
    """
    folders = [str(f) for f in checkpoints["folders"]]
    shas = [sha256(Path(f) / "model.safetensors") for f in folders]
    repo, no_auto_map = f"tester/mmfnet-{mode}", f"tester/mmfnet-{mode}-no-auto-map"
    values = {"repo": repo, "folders": folders, "no_auto_map": no_auto_map, "examples": str(ROOT / "examples")}
    values["root"] = str(ROOT)
    with (
        start_hub_server(tmp_path, token=TOKEN, inline_all=True)
        if mode == "inline"
        else nullcontext(hub_server) as hub
    ):
        xet = {"disable_xet": mode == "lfs"}
        publisher_env = hub_env(hub.endpoint, tmp_path / "hf_publisher", TOKEN, **xet)
        script = PUBLISH_WITH_PUSH_TO_HUB if mode == "lfs" else PUBLISH_WITH_SCRIPT
        published = run_client(script, publisher_env, tmp_path, **values)
        expected = {"main": 3, "dev": 2, "v1": 0, published["c2"]: 1}
        values |= {"reference": str(checkpoints["reference"]), "revs": list(expected), "remote": True}
        values |= {"errors": mode == "lfs", "good_weights": str(Path(folders[3]) / "model.safetensors")}
        consumer_env = hub_env(hub.endpoint, tmp_path / "hf_consumer", TOKEN, **xet)
        got = run_client(consumer(remote=True) + REMOTE_CONSUMER, consumer_env, tmp_path, **values)
        offline_env = hub_env(hub.endpoint, tmp_path / "hf_consumer", None, offline=True, **xet)
        offline = run_client(
            consumer(remote=True) + "RESULT = {rev: load(rev) for rev in V['revs']}", offline_env, tmp_path, **values
        )
        installed = None
        if mode == "lfs":  # with the package: no trust_remote_code, the package's classes
            installed_env = hub_env(hub.endpoint, tmp_path / "hf_installed", TOKEN, **xet)
            installed = run_client(
                "import modeling_mmfnet\n" + consumer(remote=False) + "RESULT = {rev: load(rev) for rev in V['revs']}",
                installed_env,
                tmp_path,
                **(values | {"remote": False}),
            )
        assert "hub_server:" not in hub.stderr()

    # what the repo holds: safetensors weights (LFS or inline), config with auto_map, flat code, processor, card
    files = {".gitattributes", "README.md", "config.json", "model.safetensors", *SHIPPED, *PROCESSOR_FILES}
    if mode == "inline":
        files.add("mmfnet_results.json")  # publish.py keeps the run's results next to the weights
    assert published["tree"] == {name: name == "model.safetensors" and mode == "lfs" for name in files}
    assert got["config"]["auto_map"] == {
        "AutoConfig": "configuration_mmfnet.MMFNetConfig",
        "AutoModel": "modeling_mmfnet.MMFNetModel",
        "AutoModelForSequenceClassification": "modeling_mmfnet.MMFNetForSequenceClassification",
    }
    assert got["config"]["vision_config"]["model_type"] == "mmfnet_conv"
    assert got["processor_config"]["auto_map"] == {"AutoProcessor": "processing_mmfnet.MMFNetProcessor"}

    check_pins(got["pins"], expected, shas, ["transformers_modules"])
    check_pins(offline, expected, shas, ["transformers_modules"])
    if installed is not None:
        check_pins(installed, expected, shas, ["modeling_mmfnet"])

    # the card: ours, with each pushed checkpoint's real numbers (push_to_hub and publish.py update it)
    for rev, version in expected.items():
        card = got["pins"][rev]["card"]
        source = Path(folders[version])
        assert card_metrics(card) == expected_card_metrics(source), rev
        assert f'from_pretrained("{repo}", trust_remote_code=True)' in card
        data = ModelCard(card).data
        assert data.library_name == "transformers" and data.license == "apache-2.0"
        assert {"mmfnet", "fusion-transformer", "custom_code"} <= set(data.tags)
        assert data.datasets == (["tester/tiny-avdigits"] if mode == "inline" else None)
    if mode == "inline":
        assert published["commits"][-2:] == ["first version", "initial commit"]
        return

    errors = got["errors"]
    assert "ValueError" in errors["untrusted"]["types"] and "trust_remote_code" in errors["untrusted"]["message"]
    missing = errors["missing_repo"]
    assert "OSError" in missing["types"] and "tester/no-such-model" in missing["message"]
    assert missing["cause"] == "RepositoryNotFoundError"
    revision = errors["missing_revision"]
    assert "OSError" in revision["types"] and "no-such-branch" in revision["message"]
    assert revision["cause"] == "RevisionNotFoundError"
    no_map = errors["no_auto_map"]
    assert "ValueError" in no_map["types"] and "model type `mmfnet`" in no_map["message"], no_map
    assert "does not recognize this architecture" in no_map["message"]
    for name in ("corrupt_on_hub", "corrupt_in_cache"):
        error = errors[name]
        assert "OSError" in error["types"] and error["cause"] == "SafetensorError", (name, error)
        assert (
            f"Cannot read the weights of '{repo}'" in error["message"] and "corrupt or truncated" in error["message"]
        )
        assert "force_download=True" in error["message"]
    assert got["fixed_on_hub"]["logits"] == [3] and got["force_download"]["logits"] == [3]
    assert got["force_download"]["sha256"] == shas[3]


def test_train_push_to_hub_then_load_without_package(
    hub_server: HubServer, encoder_dirs: dict[str, Path], tiny_dataset: Path, tmp_path: Path
) -> None:
    """`examples/train.py --push_to_hub` (Trainer's own arguments, token by `--hub_token`) publishes the model,
    the processor and our card with the run's real metrics, not the `--unimodal_first` branches; a process without
    the package reproduces the trained model's outputs from the Hub."""
    repo, out = "tester/mmfnet-trained", tmp_path / "out"
    args = ["--dataset", str(tiny_dataset), "--output_dir", str(out), "--do_train", "--max_steps", "2"]
    args += ["--vision_encoder", "conv", "--text_encoder", str(encoder_dirs["bert"]), "--audio_encoder", "conv"]
    args += ["--conv_hidden_sizes", "8,16,16", "--fusion_type", "gated", "--fusion_dim", "16"]
    args += ["--fusion_hidden_dim", "32", "--per_device_train_batch_size", "8", "--save_strategy", "no"]
    args += ["--report_to", "none", "--use_cpu", "--disable_tqdm", "true", "--dataloader_num_workers", "0"]
    args += ["--push_to_hub", "--hub_model_id", repo, "--hub_token", TOKEN, "--unimodal_first", "true"]
    env = hub_env(hub_server.endpoint, tmp_path / "hf_train", token=None)  # the token comes from --hub_token
    env["PYTHONPATH"] = str(ROOT)  # the package under test
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train.py"), *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    results = json.loads((out / "mmfnet_results.json").read_text())
    assert {"test_accuracy", "test_macro_f1", "test_without_audio_accuracy"} <= results.keys()

    # the publisher's reference: the saved output_dir, loaded with the package, on test rows (some modality None)
    from datasets import load_from_disk

    rows = load_from_disk(str(tiny_dataset))["test"].select(range(5))
    raw = {
        "images": [None if r["image"] is None else torch.from_numpy(np.array(r["image"])) for r in rows],
        "text": list(rows["text"]),
        "audio": [None if r["audio"] is None else torch.tensor(r["audio"]) for r in rows],
        "sampling_rate": 8000,
    }
    assert None in raw["images"] and None in raw["text"] and None in raw["audio"]
    model = mm.MMFNetForClassification.from_pretrained(out).eval()
    processor = mm.MMFNetProcessor.from_pretrained(out)
    inputs = processor(
        images=[None if x is None else Image.fromarray(x.numpy()) for x in raw["images"]],
        text=raw["text"],
        audio=[None if x is None else x.numpy() for x in raw["audio"]],
        sampling_rate=8000,
    )
    with torch.no_grad():
        out_ref = model(**inputs)
    reference = tmp_path / "reference.pt"
    torch.save(
        {"raw": raw, "inputs": dict(inputs), "logits": [out_ref.logits], "fused": [out_ref.fused_embeds]}, reference
    )

    code = (
        consumer(remote=True)
        + """
RESULT = load("main")
RESULT["files"] = sorted(HfApi().list_repo_files(REPO))
"""
    )
    got = run_client(
        code,
        hub_env(hub_server.endpoint, tmp_path / "hf_consumer", None),
        tmp_path,
        repo=repo,
        reference=str(reference),
        remote=True,
    )
    assert got["inputs_equal"] and got["logits"] == [0] and got["fused"] == [0]
    assert got["modules"] == ["transformers_modules"] and got["sha256"] == sha256(out / "model.safetensors")
    assert {"model.safetensors", "config.json", "processor_config.json", "README.md", *SHIPPED} <= set(got["files"])
    assert not any(name.endswith((".bin", ".pt")) and name != "training_args.bin" for name in got["files"])
    # `--unimodal_first`: the branches trained alone stay in output_dir, and are not pushed
    assert (out / "_unimodal-vision" / "model.safetensors").is_file()
    assert not any("unimodal" in name for name in got["files"])

    card = got["card"]
    assert card == (out / "README.md").read_text()  # our card, not the Trainer's
    shown = card_metrics(card)
    assert shown[("test accuracy (all modalities)", "test")] == results["test_accuracy"]
    assert shown[("test macro F1 (all modalities)", "test")] == results["test_macro_f1"]
    assert shown[("test accuracy (without audio)", "test")] == results["test_without_audio_accuracy"]
    reported = {k for k in results if k.startswith("test_") and not k.endswith(("runtime", "_per_second"))}
    assert len([key for key in shown if key[1] == "test"]) == len(reported)  # every test metric, nothing else
    assert {split for _, split in shown} == {"test", "eval"}  # and the validation split the best epoch was chosen on
    assert f"- training loss (mean over the run): {results['train_loss']:.4g}" in card


EVERY_PATH = """
import sys
sys.path[:0] = [V["root"], V["examples"]]
from pathlib import Path
import torch
from datasets import load_from_disk
from huggingface_hub import HfApi, ModelCard
import modeling_mmfnet as mm
import publish
from transformers import Trainer, TrainingArguments  # after the package

api, folder = HfApi(), V["folder"]
model = mm.MMFNetForClassification.from_pretrained(folder)
processor = mm.MMFNetProcessor.from_pretrained(folder)
cards = {}


def card(repo):
    return ModelCard.load(repo).content


# 1. a plain Trainer (not examples/train.py), imported after the package: evaluate, then Trainer.push_to_hub
wrapped_before_push = getattr(Trainer.create_model_card, "mmfnet_wrapped", False)  # nothing saved yet
data = load_from_disk(V["dataset"])
args = TrainingArguments(
    output_dir=str(Path(V["tmp"], "trainer")), push_to_hub=True, hub_model_id="tester/by-trainer",
    report_to="none", use_cpu=True, remove_unused_columns=False, per_device_eval_batch_size=8,
    dataloader_pin_memory=False, disable_tqdm=True,
)
trainer = Trainer(model=model, args=args, data_collator=mm.MMFNetDataCollator(processor),
                  eval_dataset=data["validation"], processing_class=processor)
metrics = trainer.evaluate()
trainer.push_to_hub(dataset="tester/tiny-avdigits")
cards["trainer"] = card("tester/by-trainer")

# 2. save_pretrained, then an upload of the folder
saved = Path(V["tmp"], "saved")
model.save_pretrained(saved)
processor.save_pretrained(saved)
api.create_repo("tester/by-upload")
api.upload_folder(repo_id="tester/by-upload", folder_path=str(saved))
cards["upload"] = card("tester/by-upload")

# 3. processor first into an empty repo, then the model
processor.push_to_hub("tester/by-push")
cards["processor_first"] = card("tester/by-push")
model.push_to_hub("tester/by-push")
cards["push"] = card("tester/by-push")

# 4. a hand-written card is updated, not replaced; a second push replaces only MMFNet's section
api.create_repo("tester/hand-written")
api.upload_file(path_or_fileobj=V["hand_written"].encode(), path_in_repo="README.md", repo_id="tester/hand-written")
model.push_to_hub("tester/hand-written", model_card_kwargs={"datasets": ["tester/pets"]})
processor.push_to_hub("tester/hand-written")
cards["updated"] = card("tester/hand-written")
publish.main([folder, "--repo_id", "tester/hand-written"])
cards["published"] = card("tester/hand-written")
model.push_to_hub("tester/hand-written", replace_model_card=True)
cards["replaced"] = card("tester/hand-written")

RESULT = {"cards": cards, "eval_loss": metrics["eval_loss"], "wrapped_before_push": wrapped_before_push}
"""

HAND_WRITTEN = """---
license: mit
language: en
tags:
- my-tag
---

# My digits model

Notes the author wrote by hand. Keep me.
"""


def test_every_publishing_path_leaves_mmfnet_card(
    hub_server: HubServer, encoder_dirs: dict[str, Path], tiny_dataset: Path, tmp_path: Path
) -> None:
    """save_pretrained + upload, processor.push_to_hub, model.push_to_hub, examples/publish.py and a plain
    Trainer.push_to_hub all leave MMFNet's card (checked with `ModelCard.load`); a hand-written card keeps its text
    and metadata unless the push asks to replace it."""
    torch.manual_seed(0)
    model = mm.MMFNetForClassification.from_encoders_pretrained(
        vision=tiny_conv(), text=str(encoder_dirs["bert"]), audio=str(encoder_dirs["wav2vec2"]),
        fusion_dim=16, fusion_hidden_dim=32, num_labels=4, text_encoder_name="google-bert/bert-base-uncased",
    )  # fmt: skip
    processor = tiny_processor(encoder_dirs)
    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "mmfnet_results.json").write_text(json.dumps({"test_accuracy": 0.75}))
    assert model.config.audio_encoder_name == str(encoder_dirs["wav2vec2"])  # recorded, a local path
    values = {"root": str(ROOT), "examples": str(ROOT / "examples"), "folder": str(folder), "tmp": str(tmp_path)}
    values |= {"hand_written": HAND_WRITTEN, "dataset": str(tiny_dataset)}
    got = run_client(EVERY_PATH, hub_env(hub_server.endpoint, tmp_path / "hf", TOKEN), tmp_path, **values)
    cards = {name: ModelCard(text) for name, text in got["cards"].items()}

    for name in ("upload", "push", "updated", "published", "replaced", "trainer"):
        data, text = cards[name].data, cards[name].text
        assert "automatically generated" not in text, name
        assert data.pipeline_tag == "image-classification" and data.library_name == "transformers", name
        assert data.base_model == ["google-bert/bert-base-uncased"], name  # from the config, not `bert`
        assert {"mmfnet", "fusion-concat", "vision", "text", "audio", "custom_code"} <= set(data.tags), name
        assert "## Intended use" in text and "## Limitations" in text, name
        assert "trust_remote_code=True" in text and "import modeling_mmfnet" in text, name  # with / without
        assert 'pipeline("multimodal-classification"' in text, name
        assert text.count("<!-- mmfnet-card ") == 1 and text.count("<!-- /mmfnet-card -->") == 1, name
        assert "No processor was saved" not in text, name
    assert "| audio | `wav2vec2` from a local folder `wav2vec2` | mean | no |" in cards["push"].text
    # the run's metrics travel with the checkpoint folder it was loaded from
    for name in ("upload", "push", "updated", "published"):
        results = {(r.metric_name, r.metric_value) for r in cards[name].data.eval_results}
        assert results == {("test accuracy (all modalities)", 0.75)}, name
        assert 'pipeline(model="tester/' in cards[name].text or name == "upload", name

    processor_only = cards["processor_first"]
    assert "mmfnet" in processor_only.data.tags and "The model is not in this repo yet" in processor_only.text

    for name in ("updated", "published"):
        data, text = cards[name].data, cards[name].text
        assert text.index("Notes the author wrote by hand. Keep me.") < text.index("<!-- mmfnet-card ")
        assert data.license == "mit" and data.language == "en" and "my-tag" in data.tags, name
        assert data.datasets == ["tester/pets"], name  # given to push_to_hub, kept by the later updates
    replaced = cards["replaced"]
    assert "Keep me." not in replaced.text and "my-tag" not in replaced.data.tags
    assert replaced.data.license == "apache-2.0"

    assert got["wrapped_before_push"] is False  # importing the package alone leaves the Trainer (and peft) alone
    trainer = cards["trainer"]
    assert trainer.data.datasets == ["tester/tiny-avdigits"]
    shown = {(r.metric_name, r.dataset_split): r.metric_value for r in trainer.data.eval_results}
    assert shown == {("eval loss (all modalities)", "eval"): got["eval_loss"]}  # what this run logged
    assert trainer.data.metrics == ["loss"]
