"""Lexical overlap on hand-worked examples (Grusky et al.'s greedy fragments)."""

import math

import pytest

from harness.scoring.overlap import fragments, overlap_scores, words

SOURCE = "The cat sat on the mat, and the dog sat on the rug."
SUMMARY = "The dog sat on the mat today."


def test_fragments_coverage_density_compression_by_hand():
    # summary: the dog sat on the mat today (7 words); source: 13 words.
    # From "the": the longest shared run is "the dog sat on the" (5, at source word 7);
    # then "mat" (1); "today" is nowhere.
    assert fragments(words(SUMMARY), words(SOURCE)) == [["the", "dog", "sat", "on", "the"], ["mat"]]
    got = overlap_scores(SUMMARY, SOURCE)
    assert got["coverage"] == pytest.approx(6 / 7)
    assert got["density"] == pytest.approx((25 + 1) / 7)
    assert got["compression"] == pytest.approx(13 / 7)


def test_novel_ngrams_by_hand():
    # distinct summary n-grams absent from the source: "today", "mat today",
    # "the mat today", "on the mat today" out of 6, 6, 5 and 4 distinct n-grams.
    got = overlap_scores(SUMMARY, SOURCE)
    assert [got[f"novel_{n}"] for n in (1, 2, 3, 4)] == pytest.approx([1 / 6, 1 / 6, 1 / 5, 1 / 4])
    assert got["repetition"] == 0.0


def test_repetition_is_the_share_of_repeated_trigrams():
    # trigrams: the cat sat | cat sat the | sat the cat | the cat sat -> one of four repeats
    assert overlap_scores("The cat sat, the cat sat.", SOURCE)["repetition"] == pytest.approx(1 / 4)


def test_edge_values_are_nan_where_a_ratio_has_no_denominator():
    empty = overlap_scores("", SOURCE)
    assert all(math.isnan(v) for v in empty.values())
    one = overlap_scores("Yes.", SOURCE)
    assert one["coverage"] == 0.0 and one["density"] == 0.0 and one["novel_1"] == 1.0
    assert math.isnan(one["novel_2"]) and math.isnan(one["repetition"])
    no_source = overlap_scores(SUMMARY, "")
    assert no_source["coverage"] == 0.0 and no_source["novel_4"] == 1.0
    assert math.isnan(no_source["compression"])
