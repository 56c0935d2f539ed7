"""Whether a request may enter an engine, and the encoder inputs it becomes.

Everything here runs on the caller's event loop before anything is queued, so bad input
is rejected at once with an error naming the field. Both the in-process engine and the
client of an engine-core process use it: the core only ever receives token ids.
"""

from __future__ import annotations

import time

from model.sampling import DecodingParams
from model.tokenizer import TASKS, SoraTokenizer, TokenizerError
from service.engine import routing
from service.engine.config import EngineConfig
from service.engine.errors import InputTooLong, InvalidRequest
from service.engine.request import Job, Sequence, TaskInput
from service.engine.routing import Capabilities
from service.engine.segment import SegmentTooLong, split_document

# Tokens the task prefix and eos add to a source (<task> <2xx> ... </s>).
PREFIX_TOKENS = 3


class Admission:
    def __init__(
        self,
        tokenizer: SoraTokenizer,
        config: EngineConfig,
        *,
        max_source_tokens: int,
        max_new_tokens: int,
        name: str,
        capabilities: Capabilities,
        can_rerank: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.can_rerank = can_rerank  # the checkpoint carries a discriminator
        self.config = config
        self.max_source_tokens = max_source_tokens
        self.max_new_tokens = max_new_tokens
        self.name = name
        # What the manifest declares this model serves: requests are checked against
        # it (an imported model's languages, not Sora's own list).
        self.capabilities = capabilities

    def admit(
        self,
        task_input: TaskInput,
        params: DecodingParams | None,
        *,
        model: str,
        version: str,
        priority: int,
        timeout: float | None,
        protocol: str,
        stream: bool,
        request_id: str | None,
    ) -> Job:
        """The request as a Job with its sequences, or InvalidRequest / InputTooLong
        naming the field. Nothing is queued: that is the caller's (engine or core client)."""
        params = self._params(params, timeout)
        job = Job(
            task_input, model=model, version=version, protocol=protocol, priority=priority,
            deadline=None if timeout is None else time.monotonic() + timeout, stream=stream,
            request_id=request_id,
        )
        self._fill(job, params)
        return job

    def _params(self, params: DecodingParams | None, timeout: float | None) -> DecodingParams:
        """The request's decoding parameters (the configured default when it gave none),
        checked against this model's limits."""
        if params is None:
            # The configured default, capped by what this model's positions allow.
            params = DecodingParams(
                max_new_tokens=min(self.config.default_max_new_tokens, self.max_new_tokens)
            )
        if params.max_new_tokens > self.max_new_tokens:
            raise InvalidRequest(
                f"max_new_tokens is {params.max_new_tokens}; the limit is {self.max_new_tokens}",
                field="max_new_tokens",
            )
        if params.rerank and not self.can_rerank:
            raise InvalidRequest(
                "rerank needs a discriminator, and this model's checkpoint carries none "
                "(GET /v1/models: can_rerank)", field="rerank",
            )
        if params.rows > self.config.max_batch_sequences:
            raise InvalidRequest(
                f"beam_size {params.rows} exceeds the batch limit "
                f"{self.config.max_batch_sequences}",
                field="beam_size",
            )
        if timeout is not None and timeout <= 0:
            raise InvalidRequest("timeout must be positive", field="timeout")
        return params

    def _fill(self, job: Job, params: DecodingParams) -> None:
        """Give `job` its sequences: one per encoder input of its task input, each with
        the token its output must start with (NLLB/M2M100/mBART's target code), if any."""
        sources = self.sources(job.input)
        forced = self.forced(job.input)
        for i, (source_ids, joiner) in enumerate(sources):
            seq = Sequence(job=job, index=i, source_ids=source_ids, params=params,
                           forced=forced)
            if seq.reserved_tokens > self.config.max_batch_tokens:
                raise InputTooLong(
                    f"input needs {seq.reserved_tokens} batch tokens (source + max_new_tokens"
                    f" x rows); the limit is {self.config.max_batch_tokens}",
                    field="max_new_tokens",
                )
            job.sequences.append(seq)
            job.joiners.append(joiner)

    def _check_text(self, name: str, value: str | None, required: bool = True) -> str:
        if value is None or not value.strip():
            if required:
                raise InvalidRequest(f"{name} must be a non-empty string", field=name)
            return ""
        if len(value) > self.config.max_input_chars:
            raise InputTooLong(
                f"{name} has {len(value)} characters; the limit is {self.config.max_input_chars}",
                field=name,
            )
        return value

    def sources(self, inp: TaskInput) -> list[tuple[list[int], str]]:
        """Encoder inputs for a request: one, or one per segment of a long document,
        each with the text placed after its output."""
        tok = self.tokenizer
        limit = self.max_source_tokens
        if inp.task not in TASKS:
            raise InvalidRequest(
                f"unknown task {inp.task!r}; expected one of {', '.join(TASKS)}", field="task"
            )
        if inp.task == "translate" and not inp.target_lang:
            raise InvalidRequest("target_lang is required for translate", field="target_lang")
        # The task and languages this model declares (names the field, lists what it serves).
        routing.check_serves(self.name, self.capabilities, [inp])
        # REST and gRPC detect a missing source first; an OIP request may still lack it.
        if inp.task == "translate" and inp.source_lang is None and \
                tok.prompting.needs_source(inp.task, inp.target_lang):
            raise InvalidRequest(
                f"model {self.name!r} needs source_lang to translate into "
                f"{inp.target_lang!r}; give one of {', '.join(self.capabilities.languages)}",
                field="source_lang",
            )
        if inp.task == "answer":
            question = self._check_text("question", inp.text)
            context = self._check_text("context", inp.context, required=False)
            try:
                ids = tok.source_ids("answer", question, context=context or None)
            except TokenizerError as e:
                raise InvalidRequest(str(e), field="question") from e
            if len(ids) > limit:
                raise InputTooLong(
                    f"question and context have {len(ids)} tokens; the limit is {limit}",
                    field="context" if context else "question",
                )
            return [(ids, "")]
        text = self._check_text("text", inp.text)
        try:
            ids = tok.source_ids(inp.task, text, inp.target_lang, source_lang=inp.source_lang)
            if len(ids) <= limit:
                return [(ids, "")]
            segments = split_document(text, lambda s: len(tok.encode(s)), limit - PREFIX_TOKENS)
        except TokenizerError as e:
            raise InvalidRequest(str(e), field="text") from e
        except SegmentTooLong as e:
            raise InputTooLong(str(e), field="text") from e
        if len(segments) > self.config.max_segments:
            raise InputTooLong(
                f"text splits into {len(segments)} segments; the limit is "
                f"{self.config.max_segments}",
                field="text",
            )
        return [(tok.source_ids(inp.task, s.text, inp.target_lang, source_lang=inp.source_lang),
                 s.joiner) for s in segments]

    def forced(self, inp: TaskInput) -> int | None:
        """The first output token this model must produce for `inp` (generate() forces
        the same), or None."""
        try:
            ids = self.tokenizer.forced_ids(inp.task, inp.target_lang)
        except TokenizerError as e:
            raise InvalidRequest(str(e), field="target_lang") from e
        return ids[0] if ids else None
