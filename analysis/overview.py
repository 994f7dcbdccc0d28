"""What a run is, for the report's first screen: the study's name, whether it is the demo,
and one line each for its models, systems, datasets, prompts, documents, seeds and scorers
(with each scorer's measured validity where the run has ground truth).

Read from the run's cells and scores and its study.yaml as a plain mapping (the report must
not need the study's models to exist).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from analysis.sections import ReportContext
from analysis.validity import format_interval
from analysis.validity_section import POOLED

DEMO_BANNER = "Demo on synthetic data with built-in tiny models"


@dataclass
class Overview:
    title: str
    banner: str = ""  # DEMO_BANNER for the demo study, else ""
    facts: list[tuple[str, str]] = field(default_factory=list)  # (what, value), plain text


def is_demo(study: dict) -> bool:
    """The study marks itself as the demo (``demo: true``), or is named ``demo``."""
    return study.get("demo") is True or study.get("name") == "demo"


def run_overview(ctx: ReportContext) -> Overview:
    study = ctx.store.read_study_raw()
    cells = list(ctx.run.cells.values())
    pruned = sorted((c for c in cells if c.prune.method != "dense"),
                    key=lambda c: (c.prune.method, c.prune.sparsity, c.prune.structure, c.label))
    docs = ctx.run.tidy.groupby("cell")["doc_id"].nunique()
    seeds = sorted({c.prune.seed for c in cells if c.prune.seed is not None})
    facts = [
        ("Models", _join(c.model for c in cells)),
        ("Pruned systems", f"{len(set(c.label for c in pruned))}: {_join(c.label for c in pruned)}"),
        ("Datasets", _join(c.task for c in cells)),
        ("Prompts", _join(c.prompt for c in cells)),
        ("Documents per cell", _range(docs.tolist())),
        ("Seeds", _seeds(seeds, study, ctx)),
        ("Scorers", _scorers(study)),
    ]
    if ctx.validity is not None and not ctx.validity.empty:
        facts.append(("Scorer validity", _validity(ctx.validity)))
    name = study.get("name") or ctx.store.root.resolve().name
    return Overview(f"prunescope report: {name}", DEMO_BANNER if is_demo(study) else "", facts)


def _join(values) -> str:
    found = list(dict.fromkeys(str(v) for v in values))
    return ", ".join(found) if found else "none"


def _range(counts: list[int]) -> str:
    if not counts:
        return "none scored"
    low, high = min(counts), max(counts)
    return str(low) if low == high else f"{low} to {high}"


def _seeds(calibration: list[int], study: dict, ctx: ReportContext) -> str:
    parts = [f"calibration {', '.join(map(str, calibration))}"] if calibration else []
    generation = (study.get("generation") or {}).get("seed")
    if generation is not None:
        parts.append(f"generation {generation}")
    n_boot, seed = ctx.bootstrap
    parts.append(f"bootstrap {seed} ({n_boot} resamples)")
    return "; ".join(parts)


def _scorers(study: dict) -> str:
    scoring = study.get("scoring")
    if not scoring:
        return "not recorded (no study.yaml)" if not study else "the study's defaults"
    named = [f"{what} {_model_name(scoring[key])}" for what, key in
             (("HaRiM+", "harim_model"), ("NLI (SummaC)", "nli_model"),
              ("SummaC-Conv head", "summac_conv_weights")) if scoring.get(key)]
    metrics = scoring.get("metrics")
    return "; ".join(named + ([f"metrics {', '.join(metrics)}"] if metrics else [])) or "the study's defaults"


def _model_name(value: str) -> str:
    """A hub id as is; a local path by its last component (the full path is in study.yaml)."""
    path = Path(str(value))
    return f"{path.name} (local)" if path.is_absolute() else str(value)


def _validity(validity) -> str:
    """Each metric's pooled AUC and balanced accuracy per dataset, with 95% CIs."""
    pooled = validity[validity["scope"] == POOLED]
    return "; ".join(f"{r.metric} on {r.task}: AUC {format_interval(r.auc, r.auc_low, r.auc_high)}, "
                     f"balanced accuracy {format_interval(r.balanced_accuracy, r.ba_low, r.ba_high)}"
                     for r in pooled.itertuples())
