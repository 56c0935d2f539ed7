"""How a task becomes model input: the one object the engine, `sora generate` and
evaluation go through (`SoraTokenizer.source_ids` delegates here), for Sora's own
checkpoints and imported ones alike.

Sora's own models read `<task> [<2xx>] text [<sep> context] </s>`. Imported models read
what they were trained on: T5 a text prefix ("translate English to German: ..."),
multilingual OPUS-MT a `>>fra<<` target token, single-direction Marian the bare text,
NLLB/M2M100 a source-language code and the target's code forced as the first output
token (`forced_ids`), mBART-cc25 the source's code after the text and the target's code
as the decoder's start token (`forced_start`). OPUS-MT also reads its text
Moses-normalized (`model.moses`).
The checkpoint's manifest stores the spec under "prompting" (absent: Sora's own).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from model.moses import normalize_punctuation

if TYPE_CHECKING:
    from model.tokenizer import SoraTokenizer

STYLES = ("sora", "text")

# English names for T5's prefixes ("translate English to German: ").
LANGUAGE_NAMES = {
    "en": "English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian",
    "zh": "Chinese", "ro": "Romanian", "pt": "Portuguese", "nl": "Dutch", "ru": "Russian",
    "ja": "Japanese", "ar": "Arabic", "cs": "Czech", "fi": "Finnish", "pl": "Polish",
    "tr": "Turkish", "sv": "Swedish", "da": "Danish", "ko": "Korean", "hi": "Hindi",
}


class PromptError(ValueError):
    """A request this model cannot be given (a task or language it does not serve)."""


@dataclass(frozen=True)
class Prompting:
    """The spec stored in the manifest. style "sora": Sora's task and language tokens.
    style "text": `templates[task]` formatted with {text}, {context}, {source} and
    {target} (English language names) and encoded, with `target_tokens[target_lang]`
    (translate) and the `prefix` tokens in front and the `suffix` tokens after. In
    prefix and suffix, "{source}" stands for `source_tokens[source_lang]` (left out when
    the request gives no source language). `forced_tokens[target_lang]` is the first
    token the decoder must produce (NLLB's "deu_Latn"), or with `forced_start` the token it
    starts from in place of config.bos_id (mBART-cc25's "ro_RO"): the target language
    reaches the decoder either way, through the same per-request id. `moses_lang`: the
    language whose Moses punctuation rules normalize the input first (OPUS-MT's); None:
    no rules."""

    style: str = "sora"
    templates: dict[str, str] = field(default_factory=dict)
    target_tokens: dict[str, str] = field(default_factory=dict)
    prefix: list[str] = field(default_factory=list)
    suffix: list[str] = field(default_factory=list)
    source_tokens: dict[str, str] = field(default_factory=dict)
    forced_tokens: dict[str, str] = field(default_factory=dict)
    forced_start: bool = False
    # [source, target] ISO pairs served; used to infer a missing source language.
    language_pairs: list[list[str]] = field(default_factory=list)
    moses_lang: str | None = None
    # The token every output starts with where no language code is forced (BART-large-cnn's
    # "<s>", transformers' forced_bos_token_id); None: none.
    forced_first: str | None = None

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise PromptError(f"prompting style must be one of {STYLES}, got {self.style!r}")

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> Prompting:
        spec = dict(manifest.get("prompting") or {})
        spec.setdefault("language_pairs", manifest.get("language_pairs") or [])
        try:
            return cls(**spec)
        except TypeError as e:
            raise PromptError(f"invalid prompting spec: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        spec = asdict(self)
        spec.pop("language_pairs")  # the manifest keeps them at top level
        for key in ("moses_lang", "forced_first"):  # manifests from before them stay as
            if spec[key] is None:  # they were
                spec.pop(key)
        return spec

    def needs_source(self, task: str, target_lang: str | None) -> bool:
        """Whether `task` into `target_lang` puts the source language into the input
        (NLLB's source code, a T5 prefix naming it) and the declared pairs cannot tell
        it: the caller must give it or detect it, since `source_ids` would leave the
        code out (or refuse) rather than guess."""
        if self.style != "text":
            return False
        if self.source_tokens and "{source}" in (*self.prefix, *self.suffix):
            return True
        template = self.templates.get(task, "")
        if "{source}" not in template and "{target}" not in template:
            return False
        return len({s for s, t in self.language_pairs if t == target_lang}) != 1

    def _source_lang(self, source_lang: str | None, target_lang: str) -> str:
        if source_lang is not None:
            return source_lang
        sources = {s for s, t in self.language_pairs if t == target_lang}
        if len(sources) == 1:
            return sources.pop()
        raise PromptError(f"this model needs source_lang to translate into {target_lang!r}")

    def source_ids(
        self,
        tokenizer: SoraTokenizer,
        task: str,
        text: str,
        target_lang: str | None = None,
        context: str | None = None,
        source_lang: str | None = None,
    ) -> list[int]:
        if self.style == "sora":
            return tokenizer.sora_source_ids(task, text, target_lang, context)
        template = self.templates.get(task)
        if template is None:
            raise PromptError(
                f"unknown task {task!r}; this model serves {', '.join(sorted(self.templates))}"
            )
        prefix: list[int] = []
        names = {"source": "", "target": ""}
        if task == "translate":
            if target_lang is None:
                raise PromptError("translate needs a target language")
            if self.target_tokens:
                prefix.append(tokenizer.token_id(self._code(self.target_tokens, target_lang,
                                                            "target")))
            self.forced_ids(tokenizer, target_lang)  # an unsupported target fails here
            if "{source}" in template or "{target}" in template:
                source_lang = self._source_lang(source_lang, target_lang)
                names = {"source": LANGUAGE_NAMES.get(source_lang, source_lang),
                         "target": LANGUAGE_NAMES.get(target_lang, target_lang)}
        body = template.format(text=text, context=context or "", **names)
        if self.moses_lang is not None:
            body = normalize_punctuation(body, self.moses_lang)
        if source_lang is not None and self.source_tokens:
            source = self._code(self.source_tokens, source_lang, "source")
        else:
            source = None
        prefix.extend(self._ids(tokenizer, self.prefix, source))
        return [*prefix, *tokenizer.encode(body), *self._ids(tokenizer, self.suffix, source)]

    @staticmethod
    def _code(codes: dict[str, str], lang: str, side: str) -> str:
        if lang not in codes:
            raise PromptError(f"unsupported {side} language {lang!r}; expected one of "
                              f"{', '.join(sorted(codes))}")
        return codes[lang]

    @staticmethod
    def _ids(tokenizer: SoraTokenizer, tokens: list[str], source: str | None) -> list[int]:
        ids = []
        for t in tokens:
            if t != "{source}":
                ids.append(tokenizer.token_id(t))
            elif source is not None:
                ids.append(tokenizer.token_id(source))
        return ids

    def forced_ids(self, tokenizer: SoraTokenizer, target_lang: str | None) -> list[int]:
        """The tokens the decoder must produce first for `target_lang` (none or one), or
        with `forced_start` the one it starts from."""
        if not self.forced_tokens or target_lang is None:
            return []
        return [tokenizer.target_token_id(self._code(self.forced_tokens, target_lang,
                                                     "target"))]
