"""Evaluate a checkpoint on held-out records: task metrics next to trivial baselines.

Each task is decoded once (batched, longest sources first) and scored per group:
translation per direction, summarization as a whole, QA as a whole and per question
template. Every group also gets a baseline computed on the same records, so a number
can be read against what doing nothing clever achieves:

    translate  copy the source unchanged
    summarize  the first N words of the source, N = mean reference length in words
    answer     the first sentence of the context

Teacher-forced loss, perplexity and token accuracy come from one forward pass per
batch over the reference targets (`tgt = <s> + target`, `labels = target + </s>`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import MANIFEST, Checkpoint, CheckpointError
from model.discriminator import Discriminator
from model.generation import generate, pad_batch
from model.sampling import DecodingParams
from model.training.data.records import AnswerRecord, Record, SummarizeRecord, TranslateRecord
from model.training.metrics import TokenCounts, bleu, chrf, qa_scores, rouge, token_counts

log = logging.getLogger(__name__)

TASK_ORDER = ("translate", "summarize", "answer")
# Display names of the score keys, in table order.
METRIC_NAMES = {
    "bleu": "BLEU",
    "chrf": "chrF",
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
    "rougeL": "ROUGE-L",
    "exact_match": "EM",
    "f1": "F1",
}
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|\n+")


@dataclass
class GroupResult:
    """Scores of one group of records (a translation direction, a QA template, ...)."""

    task: str
    group: str  # "en->de", "all", or a QA template name
    examples: int
    scores: dict[str, float]  # metric key -> percentage
    baseline: dict[str, float]  # the same keys, for the baseline's outputs
    baseline_name: str  # what the baseline did, e.g. "first 23 words of the source"

    def __post_init__(self) -> None:
        # 4 decimals: enough for any comparison, and no 100.00000000000004 in reports.
        self.scores = {k: round(v, 4) for k, v in self.scores.items()}
        self.baseline = {k: round(v, 4) for k, v in self.baseline.items()}


@dataclass
class TeacherForcing:
    """Teacher-forced statistics of one task over its reference targets."""

    task: str
    tokens: int
    loss: float  # nats per token
    perplexity: float
    token_accuracy: float  # percentage


@dataclass
class EvalReport:
    checkpoint: str
    weights_sha256: str | None  # ties the numbers to the exact weights evaluated
    decoding: dict[str, Any]
    examples: int
    seconds: float
    created: str  # ISO 8601, UTC
    groups: list[GroupResult] = field(default_factory=list)
    teacher_forcing: list[TeacherForcing] = field(default_factory=list)

    def group(self, task: str, group: str = "all") -> GroupResult:
        for g in self.groups:
            if g.task == task and g.group == group:
                return g
        raise KeyError(f"no group {task}/{group} in this report")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only; non-finite floats (a diverged model) become null."""
        data: dict[str, Any] = _finite(dataclasses.asdict(self))
        return data


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# -- inputs and targets ------------------------------------------------------------------


def _source_ids(checkpoint: Checkpoint, record: Record) -> list[int]:
    tok = checkpoint.tokenizer
    if isinstance(record, TranslateRecord):
        ids = tok.source_ids("translate", record.source, target_lang=record.tgt_lang,
                             source_lang=record.src_lang)
    elif isinstance(record, SummarizeRecord):
        ids = tok.source_ids("summarize", record.source)
    else:
        ids = tok.source_ids("answer", record.question, context=record.context)
    limit = checkpoint.model.config.max_source_positions
    # Too long for the encoder: keep the beginning and the closing </s>.
    return ids if len(ids) <= limit else [*ids[: limit - 1], ids[-1]]


def reference(record: Record) -> str:
    return record.answer if isinstance(record, AnswerRecord) else record.target


def _length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices in batches of similar length, longest first (memory peaks at once)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _decode(
    checkpoint: Checkpoint, sources: list[list[int]], forced: list[list[int]],
    params: DecodingParams, batch_size: int, discriminator: Discriminator | None,
) -> list[str]:
    texts = [""] * len(sources)
    for batch in _length_sorted_batches([len(s) for s in sources], batch_size):
        batch_sources = [sources[i] for i in batch]
        results = generate(checkpoint.model, checkpoint.tokenizer, batch_sources, params,
                           forced=[forced[i] for i in batch], discriminator=discriminator)
        for i, r in zip(batch, results, strict=True):
            texts[i] = r.text.strip()
    return texts


@torch.inference_mode()
def _teacher_forcing(
    checkpoint: Checkpoint, sources: list[list[int]], targets: list[str], batch_size: int
) -> TokenCounts:
    model, tok = checkpoint.model, checkpoint.tokenizer
    cfg = model.config
    device = model.embed.weight.device
    target_ids = [tok.encode_target(t)[: cfg.max_target_positions - 1] for t in targets]
    counts = TokenCounts()
    for batch in _length_sorted_batches([len(s) for s in sources], batch_size):
        src = pad_batch([sources[i] for i in batch], cfg.pad_id, device)
        tgt = pad_batch([[cfg.bos_id, *target_ids[i]] for i in batch], cfg.pad_id, device)
        labels = pad_batch([[*target_ids[i], cfg.eos_id] for i in batch], -100, device)
        counts = counts + token_counts(model(src, tgt).logits, labels)
    return counts


# -- baselines ---------------------------------------------------------------------------


def first_sentence(text: str) -> str:
    """The text up to its first sentence end (., !, ? or a line break)."""
    return _SENTENCE_END.split(text.strip(), maxsplit=1)[0]


def first_words(text: str, n: int) -> str:
    return " ".join(text.split()[:n])


def mean_words(texts: Sequence[str]) -> int:
    """Mean length in whitespace-separated words, rounded (at least 1)."""
    return max(1, round(sum(len(t.split()) for t in texts) / max(len(texts), 1)))


# -- scoring -----------------------------------------------------------------------------


def _groups_of(task: str, records: Sequence[Record]) -> dict[str, list[int]]:
    """Group name -> record indices. QA gets "all" plus one group per template."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        if isinstance(r, TranslateRecord):
            groups[f"{r.src_lang}->{r.tgt_lang}"].append(i)
        else:
            groups["all"].append(i)
            if isinstance(r, AnswerRecord):
                groups[r.template or "(no template)"].append(i)
    # "all" first, the rest alphabetically.
    return dict(sorted(groups.items(), key=lambda kv: (kv[0] != "all", kv[0])))


def _score_group(
    task: str, group: str, records: Sequence[Record], predictions: Sequence[str]
) -> GroupResult:
    refs = [reference(r) for r in records]
    n = len(records)
    if task == "translate":
        pairs = [r for r in records if isinstance(r, TranslateRecord)]
        lang = pairs[0].tgt_lang

        def score(hyps: Sequence[str]) -> dict[str, float]:
            return {"bleu": bleu(hyps, refs, lang), "chrf": chrf(hyps, refs)}

        copies = [r.source for r in pairs]
        return GroupResult(task, group, n, score(predictions), score(copies), "copy the source")
    if task == "summarize":
        words = mean_words(refs)
        firsts = [first_words(r.source, words) for r in records if isinstance(r, SummarizeRecord)]
        return GroupResult(task, group, n, rouge(predictions, refs), rouge(firsts, refs),
                           f"first {words} words of the source")
    sentences = [first_sentence(r.context) for r in records if isinstance(r, AnswerRecord)]
    return GroupResult(task, group, n, qa_scores(predictions, refs), qa_scores(sentences, refs),
                       "first sentence of the context")


def _subgroup_key(record: Record) -> str:
    if isinstance(record, TranslateRecord):
        return f"{record.src_lang}->{record.tgt_lang}"
    return record.template if isinstance(record, AnswerRecord) else ""


def limit_examples(records: Sequence[Record], n: int | None) -> list[Record]:
    """At most `n` records, taken round-robin over directions / templates so a small
    evaluation still covers every group; file order is kept within a group."""
    if n is None or len(records) <= n:
        return list(records)
    by_key: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_key[_subgroup_key(r)].append(r)
    queues = list(by_key.values())
    out: list[Record] = []
    depth = 0
    while len(out) < n:
        for q in queues:
            if depth < len(q) and len(out) < n:
                out.append(q[depth])
        depth += 1
    return out


def evaluate(
    checkpoint: Checkpoint,
    records: Iterable[Record],
    *,
    batch_size: int = 32,
    params: DecodingParams | None = None,
    max_examples: int | None = None,
    progress: Callable[[str], None] | None = None,
    discriminator: Discriminator | None = None,
) -> EvalReport:
    """Decode and score `records` (any mix of tasks); `max_examples` applies per task.
    params.rerank: outputs are the `discriminator`'s favourites of the beam's n best."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    params = params or DecodingParams(strategy="greedy")
    cfg = checkpoint.model.config
    if params.max_new_tokens > cfg.max_target_positions:
        params = dataclasses.replace(params, max_new_tokens=cfg.max_target_positions)
    by_task: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_task[r.task].append(r)
    model = checkpoint.model
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    groups: list[GroupResult] = []
    forced: list[TeacherForcing] = []
    total = 0
    try:
        for task in TASK_ORDER:
            recs = limit_examples(by_task.get(task, []), max_examples)
            if not recs:
                continue
            total += len(recs)
            log.info("evaluating %s on %d examples", task, len(recs))
            if progress:
                progress(f"{task}: {len(recs)} examples")
            sources = [_source_ids(checkpoint, r) for r in recs]
            truncated = sum(len(s) == cfg.max_source_positions for s in sources)
            if truncated:
                log.warning("%s: %d sources truncated to %d tokens", task, truncated,
                            cfg.max_source_positions)
            # NLLB/M2M100 start their output with the target language's code.
            first = [checkpoint.tokenizer.forced_ids(task, getattr(r, "tgt_lang", None))
                     for r in recs]
            predictions = _decode(checkpoint, sources, first, params, batch_size,
                                  discriminator)
            for name, idx in _groups_of(task, recs).items():
                groups.append(_score_group(task, name, [recs[i] for i in idx],
                                           [predictions[i] for i in idx]))
            counts = _teacher_forcing(checkpoint, sources, [reference(r) for r in recs],
                                      batch_size)
            forced.append(TeacherForcing(task, counts.tokens, counts.loss, counts.perplexity,
                                         counts.accuracy))
    finally:
        model.train(was_training)
    files = checkpoint.manifest.get("files")
    weights = files.get("model.safetensors") if isinstance(files, dict) else None
    return EvalReport(
        checkpoint=checkpoint.name,
        weights_sha256=weights.get("sha256") if isinstance(weights, dict) else None,
        decoding=dataclasses.asdict(params),
        examples=total,
        seconds=round(time.perf_counter() - start, 3),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        groups=groups,
        teacher_forcing=forced,
    )


# -- presentation and recording ----------------------------------------------------------


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def format_table(report: EvalReport) -> str:
    """The report as aligned text: each metric next to its baseline and the difference."""
    rows: list[list[str]] = []
    for g in report.groups:
        first = True
        for key, value in g.scores.items():
            base = g.baseline.get(key, math.nan)
            rows.append([
                g.task if first else "", g.group if first else "", str(g.examples) if first else "",
                METRIC_NAMES.get(key, key), f"{value:.2f}", f"{base:.2f}", f"{value - base:+.2f}",
                g.baseline_name if first else "",
            ])
            first = False
    decoding = report.decoding.get("strategy", "?")
    if decoding == "beam":
        decoding += f" {report.decoding.get('beam_size')}"
    if report.decoding.get("rerank"):
        decoding += f", n-best {report.decoding.get('num_return_sequences')} reranked"
    lines = [
        f"{report.checkpoint}: {report.examples} examples, {decoding} decoding, "
        f"{report.seconds:.1f} s",
        "",
        *_table(["task", "group", "n", "metric", "model", "baseline", "delta", "baseline is"],
                rows, right={2, 4, 5, 6}),
    ]
    if report.teacher_forcing:
        tf_rows = [
            [t.task, str(t.tokens), f"{t.loss:.4f}", f"{t.perplexity:.2f}",
             f"{t.token_accuracy:.2f}"]
            for t in report.teacher_forcing
        ]
        lines += ["", "teacher forcing (reference targets)",
                  *_table(["task", "tokens", "loss", "perplexity", "token acc %"], tf_rows,
                          right={1, 2, 3, 4})]
    return "\n".join(lines)


def record_in_manifest(
    checkpoint_dir: str | Path, report: EvalReport, key: str = "evaluation"
) -> Path:
    """Store `report` under `key` in the checkpoint's manifest.json, keeping the other
    keys. The manifest is not among the hashed files, so rewriting it (temp file in the
    same directory, then os.replace) leaves the checkpoint verifiable throughout."""
    path = Path(checkpoint_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise CheckpointError(path, "missing file") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(path, f"unreadable manifest: {e}") from e
    if not isinstance(manifest, dict):
        raise CheckpointError(path, "expected a JSON object")
    manifest[key] = report.to_dict()
    fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, path.stat().st_mode & 0o777)  # mkstemp makes it owner-only
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(manifest, indent=2) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
