"""`sora import hf ORG/NAME`: a hub id fetched by huggingface_hub, here from its cache
(HF_HUB_OFFLINE: the tests never reach huggingface.co), and the refusals."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli.main import main
from model.checkpoint import Checkpoint, load_checkpoint

hub = pytest.importorskip("huggingface_hub")

REPO = "Helsinki-NLP/opus-mt-en-de"
SHA = "0123456789abcdef0123456789abcdef01234567"
ROOT = Path(__file__).resolve().parents[3]


def hub_cache(cache: Path, repo_id: str, files: list[Path], sha: str = SHA) -> Path:
    """`files` laid out as huggingface_hub caches a download of `repo_id` at `sha`, with
    main pointing at it; the snapshot directory."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / sha
    snapshot.mkdir(parents=True)
    for f in files:
        shutil.copy(f, snapshot / f.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    return snapshot


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty hub cache, offline, for this process: huggingface_hub reads HF_HUB_CACHE
    and HF_HUB_OFFLINE when imported, so its constants are set too."""
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def test_import_a_hub_id_from_the_cache(marian_dir: Path, marian: Checkpoint,
                                        tmp_path: Path) -> None:
    # No tokenizer_config.json: the pair comes from the id, the snapshot being named by
    # its commit. The command as a user runs it, with the environment huggingface_hub reads.
    files = [f for f in marian_dir.iterdir() if f.name != "tokenizer_config.json"]
    cache = tmp_path / "hub-cache"
    hub_cache(cache, REPO, files)
    out = tmp_path / "opus"
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "cli.main", "import", "hf", REPO, "--out",
                          str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(out)
    ckpt = load_checkpoint(out)
    provenance = ckpt.manifest["provenance"]
    assert (provenance["source_model"], provenance["revision"]) == (REPO, SHA)
    assert ckpt.name == REPO and ckpt.manifest["language_pairs"] == [["en", "de"]]
    imported = marian.model.state_dict()
    assert all(torch.equal(v, imported[k]) for k, v in ckpt.model.state_dict().items())


def test_pickle_weights_need_allow_pickle(marian_dir: Path, marian_hf: torch.nn.Module,
                                          offline: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    snapshot = hub_cache(offline, REPO, [f for f in marian_dir.iterdir()
                                         if f.suffix != ".safetensors"])
    torch.save(marian_hf.state_dict(), snapshot / "pytorch_model.bin")
    out = tmp_path / "out"
    assert main(["import", "hf", REPO, "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"error: {REPO} has no *.safetensors at commit {SHA}: pass --allow-pickle to fetch "
        "pytorch_model.bin and read it with torch.load(weights_only=True), or a --revision "
        "that has them\n")
    assert main(["import", "hf", REPO, "--out", str(out), "--allow-pickle",
                 "--revision", SHA]) == 0
    assert load_checkpoint(out).manifest["provenance"]["revision"] == SHA


def test_offline_with_an_empty_cache(offline: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", "hf", REPO, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {REPO}: not a directory, and {REPO} (revision main) cannot "
                          "be downloaded: HF_HUB_OFFLINE is set and the hub cache has no "
                          "complete copy of it.")
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_huggingface_hub_not_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    assert main(["import", "hf", REPO, "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        f"error: {REPO}: not a directory; downloading it from the Hugging Face hub needs "
        "huggingface_hub: pip install 'sora[hub]'\n")


@pytest.mark.parametrize("src", ["models/opus/1", "./opus-mt-en-de", "/no/such/dir",
                                 "org/-name", "a--b/c"])
def test_neither_a_directory_nor_a_hub_id(src: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", "hf", src, "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        f"error: {src}: not a directory, nor a Hugging Face hub id (ORG/NAME, e.g. "
        "Helsinki-NLP/opus-mt-en-de)\n")


def test_revision_is_for_hub_ids(marian_dir: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", "hf", str(marian_dir), "--out", str(tmp_path / "out"),
                 "--revision", "main"]) == 2
    assert "--revision is for a hub id" in capsys.readouterr().err
