"""Byte-level BPE tokenizer with Sora's special, task and target-language tokens.

Byte-level means any text (Chinese, emoji, ...) encodes without unknown tokens. The
task and language tokens are prepended to the source so one model serves every task.
An imported model keeps its own tokenizer (and Marian a second one for its target
side) and its own way of turning a task into input (`model.prompting`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from model.prompting import PromptError, Prompting

PAD, BOS, EOS, UNK, MASK, SEP = "<pad>", "<s>", "</s>", "<unk>", "<mask>", "<sep>"
N_SENTINELS = 16
SENTINELS = tuple(f"<extra_{i}>" for i in range(N_SENTINELS))
TASKS = ("translate", "summarize", "answer")
LANGUAGES = ("en", "de", "fr", "es", "zh", "it")
TASK_TOKENS = {task: f"<{task}>" for task in TASKS}
LANG_TOKENS = {lang: f"<2{lang}>" for lang in LANGUAGES}
SPECIAL_TOKENS = (
    PAD, BOS, EOS, UNK, MASK, SEP, *SENTINELS, *TASK_TOKENS.values(), *LANG_TOKENS.values()
)


class TokenizerError(ValueError):
    """Text that cannot be turned into a model input (unknown task or language, ...)."""


@dataclass
class SoraTokenizer:
    tokenizer: Tokenizer  # the source side (both sides where they are one)
    prompting: Prompting = field(default_factory=Prompting)
    # The target side where it tokenizes differently (Marian's target.spm, numbered by
    # target_vocab.json where the model has a separate target vocabulary): decodes
    # outputs and encodes training targets.
    target: Tokenizer | None = None
    special_ids: dict[str, int] = field(init=False)  # the source side's
    special_id_set: frozenset[int] = field(init=False)
    target_special_id_set: frozenset[int] = field(init=False)  # what decoding skips

    def __post_init__(self) -> None:
        # No post-processor: Sora adds bos/eos and task prefixes explicitly (prompting).
        self.tokenizer.post_processor = None
        if self.target is not None:
            self.target.post_processor = None
        self.special_ids = {}
        if self.prompting.style != "sora":  # an imported model's own special tokens
            for tid, added in self.tokenizer.get_added_tokens_decoder().items():
                if added.special:
                    self.special_ids[added.content] = tid
        for tok in SPECIAL_TOKENS if self.prompting.style == "sora" else ():
            found = self.tokenizer.token_to_id(tok)
            if found is None:
                raise TokenizerError(f"tokenizer lacks special token {tok!r}")
            self.special_ids[tok] = found
        self.special_id_set = frozenset(self.special_ids.values())
        self.target_special_id_set = self.special_id_set if self.target is None else frozenset(
            tid for tid, added in self.target.get_added_tokens_decoder().items() if added.special
        )

    # -- construction ------------------------------------------------------------------

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> SoraTokenizer:
        """Train byte-level BPE on an iterator of texts (the training module calls this)."""
        tok = Tokenizer(models.BPE(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def from_file(
        cls, path: str | Path, prompting: Prompting | None = None, target: str | Path | None = None
    ) -> SoraTokenizer:
        """tokenizer.json (and a target side's file, if any) with its prompting."""
        return cls(
            Tokenizer.from_file(str(path)),
            prompting or Prompting(),
            None if target is None else Tokenizer.from_file(str(target)),
        )

    @classmethod
    def from_str(cls, data: str) -> SoraTokenizer:
        return cls(Tokenizer.from_str(data))

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(str(path))

    # -- ids ---------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size())

    @property
    def target_vocab_size(self) -> int:
        return int((self.target or self.tokenizer).get_vocab_size())

    @property
    def pad_id(self) -> int:
        return self.special_ids[PAD]

    @property
    def bos_id(self) -> int:
        return self.special_ids[BOS]

    @property
    def eos_id(self) -> int:
        return self.special_ids[EOS]

    @property
    def sep_id(self) -> int:
        return self.special_ids[SEP]

    def task_id(self, task: str) -> int:
        if task not in TASK_TOKENS:
            raise TokenizerError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
        return self.special_ids[TASK_TOKENS[task]]

    def lang_id(self, lang: str) -> int:
        if lang not in LANG_TOKENS:
            raise TokenizerError(
                f"unsupported language {lang!r}; expected one of {', '.join(LANGUAGES)}"
            )
        return self.special_ids[LANG_TOKENS[lang]]

    def token_id(self, token: str) -> int:
        return _id_of(self.tokenizer, token, "the tokenizer")

    def target_token_id(self, token: str) -> int:
        """`token`'s id in the target side's vocabulary (a token generation forces)."""
        return _id_of(self.target or self.tokenizer, token, "the target side")

    def sentinel_id(self, i: int) -> int:
        return self.special_ids[SENTINELS[i]]

    # -- text <-> ids ------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [list(e.ids) for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def encode_target(self, text: str) -> list[int]:
        """A target text's ids (training labels), by the target side's tokenizer."""
        tok = self.target or self.tokenizer
        return list(tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        tok = self.target or self.tokenizer
        return str(tok.decode(ids, skip_special_tokens=skip_special))

    def decode_batch(self, batch: list[list[int]], skip_special: bool = True) -> list[str]:
        tok = self.target or self.tokenizer
        return list(tok.decode_batch(batch, skip_special_tokens=skip_special))

    def source_ids(
        self,
        task: str,
        text: str,
        target_lang: str | None = None,
        context: str | None = None,
        source_lang: str | None = None,
    ) -> list[int]:
        """The encoder input for a task, as this model's prompting builds it."""
        try:
            return self.prompting.source_ids(self, task, text, target_lang, context, source_lang)
        except PromptError as e:
            raise TokenizerError(str(e)) from e

    def forced_ids(self, task: str, target_lang: str | None) -> list[int]:
        """The tokens a model must generate first for this request (NLLB/M2M100's target
        language code, else BART-large-cnn's `<s>`: `Prompting.forced_first`), which
        generation forces, or the one it starts from (mBART-cc25's,
        `Prompting.forced_start`); usually none."""
        if task == "translate":
            try:
                ids = self.prompting.forced_ids(self, target_lang)
            except PromptError as e:
                raise TokenizerError(str(e)) from e
            if ids:
                return ids
        first = self.prompting.forced_first
        return [self.target_token_id(first)] if first is not None else []

    def sora_source_ids(
        self,
        task: str,
        text: str,
        target_lang: str | None = None,
        context: str | None = None,
    ) -> list[int]:
        """Sora's own encoder input: `<task> [<2xx>] text [<sep> context] </s>`."""
        ids = [self.task_id(task)]
        if task == "translate":
            if target_lang is None:
                raise TokenizerError("translate needs a target language")
            ids.append(self.lang_id(target_lang))
        ids.extend(self.encode(text))
        if context:
            ids.append(self.sep_id)
            ids.extend(self.encode(context))
        ids.append(self.eos_id)
        return ids


def _id_of(tokenizer: Tokenizer, token: str, side: str) -> int:
    tid = tokenizer.token_to_id(token)
    if tid is None:
        raise TokenizerError(f"{side} has no token {token!r}")
    return int(tid)


class IncrementalDetokenizer:
    """Turns a growing list of ids into text pieces, never splitting a UTF-8 character.

    Byte-level BPE tokens can end inside a multi-byte character; decoding those shows a
    replacement character, so text is held back until the character is complete. A
    short window of earlier ids is re-decoded so word boundaries come out right.
    """

    def __init__(self, tokenizer: SoraTokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def push(self, token_id: int) -> str:
        """Add one id; return the text it completes (possibly empty)."""
        if token_id in self.tokenizer.target_special_id_set:
            return ""
        self.ids.append(token_id)
        prefix = self.tokenizer.decode(self.ids[self.prefix_offset : self.read_offset])
        full = self.tokenizer.decode(self.ids[self.prefix_offset :])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
            return full[len(prefix) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back at the end of the sequence."""
        prefix = self.tokenizer.decode(self.ids[self.prefix_offset : self.read_offset])
        full = self.tokenizer.decode(self.ids[self.prefix_offset :])
        self.prefix_offset = self.read_offset = len(self.ids)
        return full[len(prefix) :]

    def stream(self, ids: Iterable[int]) -> Iterator[str]:
        for i in ids:
            piece = self.push(i)
            if piece:
                yield piece
        tail = self.flush()
        if tail:
            yield tail
