"""Evaluation metrics: BLEU/chrF, ROUGE, QA exact match and F1, teacher-forced loss.

Pure functions over lists of strings (or logits and labels), so evaluation code and
tests call them the same way. Every score is a percentage in [0, 100], as sacrebleu
reports BLEU; loss is nats per token and perplexity is exp(loss).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import sacrebleu
import torch.nn.functional as F
from rouge_score import rouge_scorer
from torch import Tensor

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
IGNORE_INDEX = -100


def _check_lengths(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(references)} references; they must pair up"
        )


# -- translation -------------------------------------------------------------------------


def bleu_tokenizer(target_lang: str | None) -> str:
    """sacrebleu's tokenizer for a target language: Chinese has no spaces to split on."""
    return "zh" if target_lang == "zh" else "13a"


def bleu(
    hypotheses: Sequence[str], references: Sequence[str], target_lang: str | None = None
) -> float:
    """Corpus BLEU (sacrebleu, one reference per hypothesis); 0 for an empty corpus."""
    _check_lengths(hypotheses, references)
    if not hypotheses:
        return 0.0
    result = sacrebleu.corpus_bleu(
        list(hypotheses), [list(references)], tokenize=bleu_tokenizer(target_lang)
    )
    return float(result.score)


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (sacrebleu defaults: character 6-grams, beta 2); 0 for an empty corpus.
    Characters need no tokenizer, so this also serves Chinese."""
    _check_lengths(hypotheses, references)
    if not hypotheses:
        return 0.0
    return float(sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score)


# -- summarization -----------------------------------------------------------------------


@lru_cache(maxsize=1)
def _rouge_scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure (Porter stemming) over the pairs, keyed by ROUGE_TYPES.

    rouge-score's tokenizer keeps only ASCII letters and digits: fine for the English
    summaries Sora is trained on, meaningless for other scripts."""
    _check_lengths(hypotheses, references)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    scorer = _rouge_scorer()
    for hyp, ref in zip(hypotheses, references, strict=True):
        scores = scorer.score(ref, hyp)  # (target, prediction)
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    n = max(len(hypotheses), 1)
    return {name: 100.0 * total / n for name, total in totals.items()}


# -- question answering (SQuAD's official normalisation) ---------------------------------

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and English articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, truth: str) -> float:
    """1.0 when the normalised answers are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(truth))


def token_f1(prediction: str, truth: str) -> float:
    """F1 of the normalised answers' bags of words; when either is empty, 1.0 only if
    both are (SQuAD v2's convention)."""
    pred = normalize_answer(prediction).split()
    gold = normalize_answer(truth).split()
    if not pred or not gold:
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def qa_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean exact match and token F1, as percentages."""
    _check_lengths(predictions, references)
    n = max(len(predictions), 1)
    pairs = list(zip(predictions, references, strict=True))
    return {
        "exact_match": 100.0 * sum(exact_match(p, t) for p, t in pairs) / n,
        "f1": 100.0 * sum(token_f1(p, t) for p, t in pairs) / n,
    }


# -- teacher forcing ---------------------------------------------------------------------


def perplexity(loss: float) -> float:
    """exp(loss); infinity rather than an OverflowError for a hopeless model."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


@dataclass(frozen=True)
class TokenCounts:
    """Sums over target tokens, so batches add up exactly before averaging."""

    loss_sum: float = 0.0  # summed cross-entropy, nats
    tokens: int = 0
    correct: int = 0  # tokens whose argmax prediction is the label

    def __add__(self, other: TokenCounts) -> TokenCounts:
        return TokenCounts(
            self.loss_sum + other.loss_sum, self.tokens + other.tokens, self.correct + other.correct
        )

    @property
    def loss(self) -> float:
        return self.loss_sum / self.tokens if self.tokens else 0.0

    @property
    def perplexity(self) -> float:
        return perplexity(self.loss)

    @property
    def accuracy(self) -> float:
        """Percentage of tokens predicted exactly."""
        return 100.0 * self.correct / self.tokens if self.tokens else 0.0


def token_counts(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> TokenCounts:
    """Loss sum, token count and argmax hits for one teacher-forced batch.
    logits: (batch, tgt_len, vocab); labels: (batch, tgt_len) with ignore_index skipped."""
    flat_logits = logits.float().reshape(-1, logits.shape[-1])  # (batch * tgt_len, vocab)
    flat_labels = labels.reshape(-1)
    loss = F.cross_entropy(flat_logits, flat_labels, ignore_index=ignore_index, reduction="sum")
    valid = flat_labels != ignore_index
    hits = (flat_logits.argmax(dim=-1) == flat_labels) & valid
    return TokenCounts(float(loss), int(valid.sum()), int(hits.sum()))

