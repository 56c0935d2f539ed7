"""A Hugging Face hub id as `sora import hf`'s source: only the files the importer reads,
fetched into the hub's own cache by huggingface_hub (the optional `hub` extra, imported
only when downloading: neither importing nor serving needs it), and the commit they
came from, for the checkpoint's provenance.

huggingface_hub reads its own environment: HF_TOKEN (private and gated models),
HF_HUB_OFFLINE (the cache only), HF_HUB_CACHE / HF_HOME (where the cache is).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from model.hf.families import HFImportError

log = logging.getLogger(__name__)

# ORG/NAME or NAME, as the hub spells them: letters, digits, "_", "-", "." (not first or
# last), at most 96 characters each. A path ("./x", "/x", "a/b/c") is never one.
_PART = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9])?"
HUB_ID = re.compile(rf"(?:{_PART}/)?{_PART}")
# What model.hf.importer reads, at the repository's top level: a hub repository also
# holds TF, Flax, Rust or ONNX copies of the weights, often gigabytes each.
FILES = [
    "config.json", "generation_config.json", "*.safetensors",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "source.spm", "target.spm", "vocab.json", "target_vocab.json",  # Marian
    "spiece.model", "sentencepiece.bpe.model",
]
PICKLE = "pytorch_model.bin"  # fetched only with --allow-pickle, where no safetensors are
INSTALL = "pip install 'sora[hub]'"


@dataclass(frozen=True)
class HubSnapshot:
    repo_id: str
    revision: str  # the commit sha the files are from (a branch or tag resolved)
    path: Path  # the snapshot directory in the hub cache


def is_hub_id(text: str) -> bool:
    return HUB_ID.fullmatch(text) is not None and "--" not in text and ".." not in text


def download(repo_id: str, revision: str | None = None, *,
             allow_pickle: bool = False) -> HubSnapshot:
    """The importer's files of `repo_id` at `revision` (default: main), from the hub or,
    offline, from the cache. Raises HFImportError naming the id and what went wrong."""
    if not is_hub_id(repo_id):
        raise HFImportError(f"{repo_id}: not a directory, nor a Hugging Face hub id "
                            "(ORG/NAME, e.g. Helsinki-NLP/opus-mt-en-de)")
    log.info("fetching %s (revision %s) from the Hugging Face hub", repo_id,
             revision or "main")
    path = _fetch(repo_id, revision, FILES)
    # The cache names each snapshot directory after its commit.
    snapshot = HubSnapshot(repo_id, path.name, path)
    if not any(path.glob("*.safetensors")):
        if not allow_pickle:
            raise HFImportError(
                f"{repo_id} has no *.safetensors at commit {snapshot.revision}: pass "
                f"--allow-pickle to fetch {PICKLE} and read it with "
                "torch.load(weights_only=True), or a --revision that has them")
        _fetch(repo_id, snapshot.revision, [PICKLE])
    return snapshot


def _fetch(repo_id: str, revision: str | None, patterns: list[str]) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            OfflineModeIsEnabled,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:
        raise HFImportError(f"{repo_id}: not a directory; downloading it from the Hugging "
                            f"Face hub needs huggingface_hub: {INSTALL}") from None
    what = f"{repo_id} (revision {revision or 'main'})"
    try:
        return Path(snapshot_download(
            repo_id, revision=revision, allow_patterns=patterns, ignore_patterns=["*/*"],
            library_name="sora"))
    except LocalEntryNotFoundError as e:
        reason = ("HF_HUB_OFFLINE is set" if isinstance(e.__cause__, OfflineModeIsEnabled)
                  else "the Hugging Face hub cannot be reached (no network?)")
        raise HFImportError(
            f"{repo_id}: not a directory, and {what} cannot be downloaded: {reason} and the "
            "hub cache has no complete copy of it. Download it where there is network, or "
            "give a local save_pretrained directory") from None
    except GatedRepoError:
        raise HFImportError(f"{repo_id} is gated: accept its terms on huggingface.co and "
                            "set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise HFImportError(f"{repo_id}: not a directory, nor a model on the Hugging Face "
                            "hub (a private one needs HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise HFImportError(f"{repo_id} has no revision {revision!r}") from None
    except (HfHubHTTPError, OSError) as e:
        raise HFImportError(f"cannot download {what}: {e}") from None
