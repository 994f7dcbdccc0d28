"""The facts task, the ground-truth metric, prune sweeps and seeds, seed aggregation and the
truth-reading simulated annotators."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from harness.config import ConfigError, parse_study
from harness.scoring.ground_truth import ground_truth, mentions
from tasks import load_task
from tasks.synthetic import records

DOC = ("Norda Group will open 42 new stores in Harwick, its chief executive Anna Berg said on "
       "3 March. The plan will create 57 jobs over the next two years. Peter Holm, an analyst at "
       "Vesta Bank, said the move was expected.")
FACTS = [{"type": "organisation", "value": "Norda Group", "key": True},
         {"type": "number", "value": "42", "key": True},
         {"type": "place", "value": "Harwick", "key": True},
         {"type": "person", "value": "Anna Berg", "key": True},
         {"type": "date", "value": "3 March", "key": True},
         {"type": "number", "value": "57", "key": True},
         {"type": "person", "value": "Peter Holm", "key": False},
         {"type": "organisation", "value": "Vesta Bank", "key": False}]
FAITHFUL = "Norda Group will open 42 new stores in Harwick, Anna Berg said on 3 March. The plan will create 57 jobs."


def test_copied_facts_are_faithful_and_recalled():
    got = ground_truth(FAITHFUL, DOC, FACTS)
    assert got == {"gt_hallucinated_facts": 0.0, "gt_hallucination": 0.0,
                   "gt_fact_recall": 1.0, "gt_repetition": 0.0}


def test_invented_entity_and_changed_number_count_once_each():
    summary = FAITHFUL.replace("Anna Berg", "Clara Dahl").replace("57 jobs", "75 jobs")
    got = ground_truth(summary, DOC, FACTS)
    assert got["gt_hallucinated_facts"] == 2 and got["gt_hallucination"] == 1
    assert got["gt_fact_recall"] == pytest.approx(4 / 6)  # Anna Berg and 57 no longer stated


def test_entity_swapped_within_the_document_contradicts_it():
    # Peter Holm is in the document, but not in the sentence this one restates.
    summary = "Norda Group will open 42 new stores in Harwick, Peter Holm said on 3 March."
    got = ground_truth(summary, DOC, FACTS)
    assert got["gt_hallucinated_facts"] == 1
    assert got["gt_fact_recall"] == pytest.approx(4 / 6)  # Anna Berg and 57 omitted


def test_omitted_facts_lower_recall_only():
    got = ground_truth("Norda Group will open 42 new stores in Harwick.", DOC, FACTS)
    assert got["gt_hallucinated_facts"] == 0 and got["gt_fact_recall"] == pytest.approx(3 / 6)


def test_repeated_sentence():
    summary = "The plan will create 57 jobs. The plan will create 57 jobs! Norda Group will open 42 new stores."
    assert ground_truth(summary, DOC, FACTS)["gt_repetition"] == pytest.approx(1 / 3)


def test_empty_summary_and_task_without_facts():
    empty = ground_truth("", DOC, FACTS)
    assert empty["gt_hallucinated_facts"] == 0 and empty["gt_fact_recall"] == 0
    assert math.isnan(empty["gt_repetition"])
    assert all(math.isnan(v) for v in ground_truth(FAITHFUL, DOC, None).values())


def test_mentions_rules():
    # a date is one mention (its day is not a number); a one-word capitalised sentence start is not a name
    assert mentions("Officials said on 3 March that Anna Berg hired 42 people in Harwick.", []) == \
        ["3 March", "42", "Anna Berg", "Harwick"]


def test_facts_task_references_are_faithful_and_complete():
    task = load_task("facts")
    assert len(task.records) == 400 and task.records[0].facts
    assert task.records[0].document == records(400, 1000)[0]["document"]  # reproducible
    for record in task.records:
        got = ground_truth(record.reference, record.document, record.facts)
        assert got["gt_hallucinated_facts"] == 0 and got["gt_fact_recall"] == 1


def test_bad_gold_facts_named(tmp_path):
    from tasks.errors import DataError

    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "x", "document": "D.", "reference": "R.", "facts": [{"type": "number"}]}\n')
    with pytest.raises(DataError, match=r"line 1: field 'facts': fact 0: needs"):
        load_task("facts", data=path)


def test_sweeps_and_seeds_expand(tmp_path):
    raw = {"name": "s", "models": [{"name": "m", "path": str(tmp_path)}], "tasks": [{"name": "facts"}],
           "prune": [{"method": "magnitude", "sparsity": [0.5, 0.8], "seeds": [0, 1]},
                     {"method": "wanda", "sparsity": [0.5, 0.6, 0.7, 0.8], "seeds": [0, 1, 2]},
                     {"method": "sparsegpt", "structure": ["2:4", "4:8"]}],
           "seeds": [5]}
    study = parse_study(raw)
    keys = [p.key for p in study.prune]
    assert keys[:2] == ["magnitude-0.5", "magnitude-0.8"]  # no random choice: not repeated
    assert keys[2:5] == ["wanda-0.5", "wanda-0.5-s1", "wanda-0.5-s2"]
    assert len(keys) == 2 + 12 + 2 and len(set(keys)) == len(keys)
    assert [p.calibration.seed for p in study.prune[2:5]] == [0, 1, 2]
    assert keys[-2:] == ["sparsegpt-2of4-s5", "sparsegpt-4of8-s5"]  # the study's seeds
    with pytest.raises(ConfigError, match=r"prune\[0\].seeds must be a non-empty list"):
        parse_study({**raw, "prune": [{"method": "wanda", "seeds": []}]})


def test_seed_aggregation_matches_hand_computation():
    from analysis.seeds import pooled_ratio, seed_bootstrap

    pruned = [np.array([0.2, 0.4]), np.array([0.6, 0.6]), np.array([0.1, 0.3])]
    dense = [np.array([0.2, 0.2]), np.array([0.2, 0.2]), np.array([0.2, 0.2])]
    # seed means 0.3, 0.6, 0.2 -> 1.1 / 3 over dense 0.2
    assert pooled_ratio(pruned, dense) == pytest.approx((1.1 / 3) / 0.2)
    low, high = seed_bootstrap(pruned, dense, n_boot=2000)
    # any resample's ratio lies between the smallest (0.1) and largest (0.6) document risk over 0.2
    assert 0.5 - 1e-9 <= low < pooled_ratio(pruned, dense) < high <= 3.0 + 1e-9
    same = [np.array([0.2, 0.4])] * 3
    tight = seed_bootstrap(same, dense, n_boot=2000)
    assert high - low > tight[1] - tight[0]  # the between-seed spread widens the CI


def test_truth_reading_annotators_reach_expected_kappa():
    from sklearn.metrics import cohen_kappa_score

    from annotation.simulate import expected_kappa, truth_reader

    rng = random.Random(0)
    truth = [rng.choices(["A", "B", "tie"], weights=[0.5, 0.3, 0.2])[0] for _ in range(20000)]
    shares = {c: truth.count(c) / len(truth) for c in ("A", "B", "tie")}
    one, two = truth_reader(truth, 0.3, random.Random(1)), truth_reader(truth, 0.3, random.Random(2))
    assert cohen_kappa_score(one, two) == pytest.approx(expected_kappa(shares, 0.3), abs=0.015)
    assert expected_kappa(shares, 0.0) == pytest.approx(1.0)
    assert expected_kappa(shares, 1.0) == pytest.approx(0.0)
