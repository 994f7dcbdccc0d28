"""``validate_metrics``: score a file of labelled claims with the hallucination metrics and
measure how well each metric's risk detects the inconsistent ones (``analysis.validity``).

Writes into ``out``: ``scores.parquet`` and ``scores.csv`` (a row per claim: id, cut, label,
hallucinated, each metric's score and risk), ``summary.csv`` and ``summary.json`` (per metric:
counts per label, AUC, balanced accuracy, threshold, 95% CIs, protocol; the JSON adds the
task, file, label direction and scorer provenance).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness import atomic
from harness.config import ScoringConfig
from harness.errors import PrunescopeError
from harness.scoring import Scorers, registry
from tasks import load_task
from tasks.claims import labelled_claims

# the registry's metrics with a hallucination-risk column that judge a claim (the ground
# truth reads a task's gold facts, which a claim file does not have)
HALLUCINATION_METRICS = tuple(m.name for m in registry.METRICS.values() if m.risk and not m.gold)


@dataclass
class ValidationResult:
    scores: pd.DataFrame  # a row per claim
    summary: pd.DataFrame  # a row per metric
    out: Path


def validate_metrics(task: str, data: str | Path, scoring: ScoringConfig, out: str | Path, *,
                     limit: int | None = None, hallucinated_label: str = "0",
                     n_boot: int = 1000, seed: int = 0,
                     allow_downloads: bool = False) -> ValidationResult:
    """Score the claims of ``data`` (read as task ``task``) with ``scoring.metrics`` (the
    registry's metrics with a risk column: HaRiM, SummaC-ZS, SummaC-Conv) and measure each
    metric's validity for the claims labelled ``hallucinated_label``. The threshold is chosen
    on the val cut and measured on the test cut where the file has both, else by
    cross-validation over documents (claims of one document stay in one fold and are
    resampled together)."""
    from analysis.validity import validity_table

    other = sorted(set(scoring.metrics) - set(HALLUCINATION_METRICS))
    if other:
        raise PrunescopeError(f"validate-metrics measures hallucination metrics only "
                              f"({', '.join(HALLUCINATION_METRICS)}), not {', '.join(other)}")
    loaded = load_task(task, data=data, limit=limit)
    note = f" (only the first {limit} records were read: raise the limit)" if limit else ""
    claims = labelled_claims(loaded, str(data), hallucinated_label, note)
    scorers = Scorers(scoring, allow_downloads=allow_downloads)
    summaries = [{"doc_id": i, "text": c, "output_tokens": len(c.split())}
                 for i, c in zip(claims.ids, claims.claims)]
    scored = scorers.score(summaries, dict(zip(claims.ids, claims.documents)), {})
    consistent_label = str(1 - int(hallucinated_label))
    frame = pd.DataFrame({"id": claims.ids, "cut": claims.cuts or None,
                          "label": [hallucinated_label if h else consistent_label
                                    for h in claims.hallucinated],
                          "hallucinated": claims.hallucinated.astype(int),
                          "document": [str(d) for d in claims.documents]})
    metrics = []
    for risk in (r for m in scoring.metrics for r in registry.get(m).risk):
        frame[risk.column] = scored[risk.column].to_numpy()
        frame[f"risk {risk.label}"] = 1 - frame[risk.column] if risk.invert else frame[risk.column]
        metrics.append(risk.label)
    risks = frame.rename(columns={f"risk {m}": m for m in metrics})
    summary = validity_table(risks, metrics, "hallucinated", group="document",
                             cut="cut" if claims.protocol_cut is not None else None,
                             n_boot=n_boot, seed=seed)
    scores = frame.drop(columns="document")
    out = Path(out)
    atomic.write_with(out / "scores.parquet", lambda p: scores.to_parquet(p, index=False))
    atomic.write_with(out / "scores.csv", lambda p: scores.to_csv(p, index=False))
    atomic.write_with(out / "summary.csv", lambda p: summary.to_csv(p, index=False))
    atomic.write_json(out / "summary.json", {
        "task": task, "file": str(data), "records": len(claims.ids),
        "positive_class": f"label \"{hallucinated_label}\" (inconsistent = hallucinated)",
        "bootstrap": {"resamples": n_boot, "seed": seed, "unit": "document"},
        "metrics": summary.to_dict(orient="records"), "scorers": scorers.provenance()})
    return ValidationResult(scores, summary, out)


def describe(result: ValidationResult) -> str:
    """The summary as text for the terminal."""
    from analysis.validity import format_interval

    lines = [f"{len(result.scores)} claims: {int(result.scores['hallucinated'].sum())} inconsistent, "
             f"{int((result.scores['hallucinated'] == 0).sum())} consistent"]
    for row in result.summary.itertuples():
        lines.append(f"{row.metric}: AUC {format_interval(row.auc, row.auc_low, row.auc_high)}  balanced accuracy "
                     f"{format_interval(row.balanced_accuracy, row.ba_low, row.ba_high)}  threshold {row.threshold:.4g} "
                     f"({row.protocol}, n={row.n}){'  ' + row.note if row.note else ''}")
    below = result.summary["auc_high"] < 0.5
    if len(result.summary) and below.all():
        lines.append("every metric ranks the claims against the labels (AUC CI below 0.5): is "
                     "the label direction right? (--hallucinated-label)")
    lines.append(f"written: {result.out}/scores.parquet, scores.csv, summary.csv, summary.json")
    return "\n".join(lines)

