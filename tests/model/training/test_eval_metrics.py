"""Metric functions against values known by hand or by definition."""

from __future__ import annotations

import math

import pytest
import torch

from model.training.metrics import (
    TokenCounts,
    bleu,
    chrf,
    exact_match,
    normalize_answer,
    perplexity,
    qa_scores,
    rouge,
    token_counts,
    token_f1,
)

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "a library for reading and writing compressed archives",
]


def test_bleu_and_chrf_of_identical_text_are_100() -> None:
    assert bleu(SENTENCES, SENTENCES) == pytest.approx(100.0)
    assert chrf(SENTENCES, SENTENCES) == pytest.approx(100.0)


def test_bleu_of_unrelated_text_is_0() -> None:
    assert bleu(["xyzzy plugh"] * 2, SENTENCES) == 0.0


def test_bleu_uses_the_zh_tokenizer_for_chinese() -> None:
    hyp, ref = ["这是一个用于压缩文件的程序库"], ["这是一个用于读取文件的程序库"]
    # 13a sees one "word" per sentence and scores 0; zh splits characters.
    assert bleu(hyp, ref) == 0.0
    assert 0.0 < bleu(hyp, ref, target_lang="zh") < 100.0
    assert bleu(ref, ref, target_lang="zh") == pytest.approx(100.0)


def test_chrf_hand_computed() -> None:
    # unigrams {a,b} vs {a,c}: P = R = 1/2 so F = 1/2; bigram "ab" vs "ac": F = 0.
    # Orders with no n-grams are left out, so chrF = mean(0.5, 0) = 25.
    assert chrf(["ab"], ["ac"]) == pytest.approx(25.0)


def test_empty_corpus_and_length_mismatch() -> None:
    assert bleu([], []) == 0.0
    assert chrf([], []) == 0.0
    with pytest.raises(ValueError, match="pair up"):
        bleu(["a"], [])


def test_rouge_hand_computed() -> None:
    scores = rouge(["the cat sat on the mat"], ["the cat sat"])
    # 3 of 6 hypothesis unigrams match all 3 reference unigrams: F = 2*.5*1/1.5
    assert scores["rouge1"] == pytest.approx(100 * 2 / 3)
    # 2 of 5 hypothesis bigrams match both reference bigrams: F = 2*.4*1/1.4
    assert scores["rouge2"] == pytest.approx(100 * 0.8 / 1.4)
    assert scores["rougeL"] == pytest.approx(100 * 2 / 3)  # LCS = 3


def test_rouge_stems_and_averages() -> None:
    assert rouge(["cats running"], ["cat runs"])["rouge1"] == pytest.approx(100.0)
    avg = rouge(["a b", "x y"], ["a b", "p q"])
    assert avg["rouge1"] == pytest.approx(50.0)


def test_normalize_answer_squad_rules() -> None:
    assert normalize_answer("The  Quick, brown FOX!") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("theory") == "theory"  # articles only as whole words


@pytest.mark.parametrize(
    ("pred", "truth", "em", "f1"),
    [
        ("Denver Broncos", "denver broncos", 1.0, 1.0),
        ("the Denver Broncos.", "Denver Broncos", 1.0, 1.0),
        ("Broncos", "Denver Broncos", 0.0, 2 * 1.0 * 0.5 / 1.5),
        ("Carolina Panthers", "Denver Broncos", 0.0, 0.0),
        ("", "", 1.0, 1.0),
        ("the", "Denver", 0.0, 0.0),  # normalises to empty vs non-empty
        ("a b c d", "b c e", 0.0, 2 / 3),  # "a" is an article: P = R = 2/3
    ],
)
def test_exact_match_and_f1(pred: str, truth: str, em: float, f1: float) -> None:
    assert exact_match(pred, truth) == em
    assert token_f1(pred, truth) == pytest.approx(f1)


def test_qa_scores_are_mean_percentages() -> None:
    scores = qa_scores(["Denver Broncos", "Panthers"], ["Denver Broncos", "Denver Broncos"])
    assert scores == {"exact_match": 50.0, "f1": 50.0}


def test_token_counts_match_cross_entropy() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 7)
    labels = torch.tensor([[1, 2, -100], [3, -100, -100]])
    counts = token_counts(logits, labels)
    assert counts.tokens == 3
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 7), labels.reshape(-1))
    assert counts.loss == pytest.approx(float(expected), rel=1e-5)
    assert counts.perplexity == pytest.approx(math.exp(float(expected)), rel=1e-5)
    hits = int(((logits.argmax(-1) == labels) & (labels != -100)).sum())
    assert counts.correct == hits


def test_token_counts_perfect_prediction_and_sums() -> None:
    labels = torch.tensor([[0, 1, 2]])
    logits = torch.full((1, 3, 4), -1e4)
    logits[0, torch.arange(3), labels[0]] = 1e4
    counts = token_counts(logits, labels)
    assert counts.accuracy == 100.0
    assert counts.loss == pytest.approx(0.0, abs=1e-6)
    total = counts + TokenCounts(loss_sum=3.0, tokens=3, correct=0)
    assert (total.tokens, total.correct, total.accuracy) == (6, 3, 50.0)
    assert total.loss == pytest.approx(0.5, abs=1e-6)
    assert TokenCounts().loss == 0.0 and TokenCounts().accuracy == 0.0


def test_perplexity_overflow_is_infinite() -> None:
    assert perplexity(0.0) == 1.0
    assert perplexity(1e6) == math.inf
