"""The metric registry: every metric a study can ask for, declared once.

An entry names the metric, the score columns it fills, the scorer models it needs, the
module holding its batch ``score`` and ``provenance``, what its ``evaluate`` wrapper takes as
``references``, and which of its columns are hallucination risks for the analysis. Config
choices, CLI choices, the score contract (``columns()``), the evaluate wrappers and the
analysis's risk columns all derive from ``METRICS``; adding a metric is one module plus one
entry here (docs/ARCHITECTURE.md, "Adding a metric").

The metric module provides::

    def score(batch: ScoreBatch, scorers: Scorers) -> dict[str, list]   # column -> values
    def provenance(scorers: Scorers) -> dict                              # what produced them

This module imports nothing heavy, so the config and the CLI can read it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

BASE_COLUMNS = ("doc_id", "summary_tokens", "summary_words", "empty")


@dataclass(frozen=True)
class RiskColumn:
    """A score column read as a hallucination risk: ``label`` names it in the report;
    ``invert``: the risk is 1 - value (a faithfulness score)."""

    label: str
    column: str
    invert: bool = False


@dataclass(frozen=True)
class Metric:
    name: str
    columns: tuple[str, ...]
    module: str  # import path of the module with score() and provenance()
    needs: tuple[str, ...] = ()  # scorer models: "harim" (seq2seq), "nli" (classifier)
    default: bool = True  # part of ScoringConfig.metrics by default
    references: str = "source"  # what evaluate's `references` are: "source" or "reference"
    risk: tuple[RiskColumn, ...] = ()
    # column -> (report table, label); tables: "quality", "overlap", "output"
    report: dict[str, tuple[str, str]] = field(default_factory=dict)
    settings: tuple[str, ...] = ()  # ScoringConfig fields that must be set (e.g. weights)
    gold: bool = False  # reads the task's gold facts (the ground truth), judges nothing itself

    def load(self):
        """The metric's module (score, provenance)."""
        return importlib.import_module(self.module)


def _rouge_report() -> dict[str, tuple[str, str]]:
    ref = {f"rouge{k}_ref": ("quality", f"ROUGE-{k}") for k in ("1", "2", "L")}
    return {**ref, **{f"rouge{k}_src": ("overlap", f"ROUGE-{k} src") for k in ("1", "2", "L")}}


def _overlap_report() -> dict[str, tuple[str, str]]:
    shown = {"coverage": ("overlap", "coverage"), "density": ("overlap", "density")}
    shown.update({f"novel_{n}": ("overlap", f"novel {n}-grams") for n in range(1, 5)})
    return {**shown, "repetition": ("output", "repetition")}


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("harim", ("harim_plus", "harim", "harim_loglik"), "harness.scoring.harim",
           needs=("harim",), risk=(RiskColumn("HaRiM", "harim"),)),
    Metric("summac_zs", ("summac_zs",), "harness.scoring.summac_zs", needs=("nli",),
           risk=(RiskColumn("SummaC-ZS", "summac_zs", invert=True),)),
    Metric("summac_conv", ("summac_conv",), "harness.scoring.summac_conv", needs=("nli",),
           default=False, settings=("summac_conv_weights",),
           risk=(RiskColumn("SummaC-Conv", "summac_conv", invert=True),)),
    Metric("rouge", ("rouge1_ref", "rouge2_ref", "rougeL_ref", "rouge1_src", "rouge2_src", "rougeL_src"),
           "harness.scoring.rouge", references="reference", report=_rouge_report()),
    Metric("overlap", ("coverage", "density", "compression", "novel_1", "novel_2", "novel_3",
                       "novel_4", "repetition"), "harness.scoring.overlap", report=_overlap_report()),
    Metric("ground_truth", ("gt_hallucinated_facts", "gt_hallucination", "gt_fact_recall",
                            "gt_repetition"), "harness.scoring.ground_truth", references="reference", gold=True,
           risk=(RiskColumn("Ground truth", "gt_hallucination"),),
           report={"gt_fact_recall": ("quality", "fact recall (ground truth)"),
                   "gt_hallucinated_facts": ("output", "hallucinated facts (ground truth)"),
                   "gt_repetition": ("output", "repeated sentences (ground truth)")}),
)}


def get(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; one of {', '.join(METRICS)}") from None


def names() -> tuple[str, ...]:
    return tuple(METRICS)


def default_names() -> list[str]:
    return [m.name for m in METRICS.values() if m.default]


def columns() -> tuple[str, ...]:
    """The score contract: base columns, then every registered metric's columns in order."""
    out = list(BASE_COLUMNS)
    for metric in METRICS.values():
        out += [c for c in metric.columns if c not in out]
    return tuple(out)


def risk_columns() -> dict[str, RiskColumn]:
    """Report label -> risk column, over every registered metric."""
    return {r.label: r for m in METRICS.values() for r in m.risk}


def table_columns(table: str) -> dict[str, str]:
    """Column -> label of the metric columns shown in one report table, in registry order."""
    return {column: label for metric in METRICS.values()
            for column, (where, label) in metric.report.items() if where == table}
