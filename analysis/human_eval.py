"""The report's human-evaluation section: agreement between annotators and, per question, how
often each system was judged worse (the reference study's table), from imported answers."""

from __future__ import annotations

import pandas as pd

from analysis.agreement import SIMULATED_NOTE, UNDEFINED, compute_agreement
from analysis.sections import ReportContext, ReportSection
from annotation.batch import batch_dir, list_batches
from annotation.simulate import read_expected


def report_section(ctx: ReportContext) -> ReportSection | None:
    """None when no answers have been imported. The bootstrap follows the report's (the risk
    table's settings, else the study's ``analysis`` section)."""
    attrs = ctx.risk.attrs if ctx.risk is not None else {}
    n_boot = attrs.get("n_boot", ctx.settings.bootstrap)
    seed = attrs.get("seed", ctx.settings.seed)
    result = compute_agreement(ctx.store.root, n_boot=n_boot, seed=seed)
    if result is None:
        return None
    agreement = result.agreement.assign(value=result.agreement["value"].map(_number),
                                        ci=[_interval(lo, hi) for lo, hi in
                                            zip(result.agreement["ci_low"], result.agreement["ci_high"])])
    if not result.preferences.empty:  # name each batch's (unblinded) system for the reader
        systems = result.preferences.drop_duplicates("batch").set_index("batch")["system"]
        agreement = agreement.assign(system=agreement["batch"].map(systems))
    else:
        agreement = agreement.assign(system="")
    expected = expected_kappas(ctx, agreement)
    if expected is not None:
        agreement = agreement.assign(**{"expected (simulated)": expected})
    agreement = agreement[["batch", "system", "question", "statistic", "annotators", "n_items", "value",
                           "ci", *(["expected (simulated)"] if expected is not None else []), "band",
                           "note"]].fillna("")
    preferences = result.preferences.assign(p_value=result.preferences["p_value"].map(_number))
    text = ("Blinded pairwise judgements: annotators saw the article and two summaries in random "
            "order (A/B) and answered four questions with A, B or tie. Agreement is Cohen's kappa "
            "per annotator pair, Fleiss' kappa and Krippendorff's alpha (nominal) across annotators, "
            f"with 95% bootstrap CIs over items ({n_boot} resamples, seed {seed}) and Landis-Koch bands; "
            "'undefined' means the statistic carries no information on these answers (the note "
            "says why). Preferences count items by the annotators' majority answer, unblinded; "
            "the p-value is a two-sided sign test over items without a tie.")
    title = "Human evaluation"
    if result.simulated:
        title += " (simulated annotators)"
        text = f"{SIMULATED_NOTE}. {text}"
    if expected is not None:
        rates = sorted({e["error_rate"] for e in _expected_files(ctx).values()})
        text += (" The simulated annotators read the ground truth (which summary states more "
                 "hallucinated facts, recalls fewer key facts, repeats more sentences; Q4: fewer "
                 "hallucinated facts, then more recalled) and answer at random with probability "
                 f"{', '.join(f'{r:g}' for r in rates)}, so two of them should reach the Cohen's kappa "
                 "in 'expected (simulated)' (computed from the true answers' shares); the measured "
                 "kappa beside it checks the agreement machinery.")
    return ReportSection(title=title, text=text,
                         tables={"Inter-annotator agreement": agreement,
                                 "Which system was judged worse, per question": preferences},
                         sources=result.sources)


def _expected_files(ctx: ReportContext) -> dict[str, dict]:
    """Batch id -> its simulated annotators' ``expected.json`` (``annotation.simulate``)."""
    found = {b: read_expected(batch_dir(ctx.store.root, b)) for b in list_batches(ctx.store.root)}
    return {b: e for b, e in found.items() if e is not None}


def expected_kappas(ctx: ReportContext, agreement: pd.DataFrame) -> list[str] | None:
    """The expected Cohen's kappa of each Cohen row whose batch was answered by truth-reading
    simulated annotators; None when no batch was."""
    files = _expected_files(ctx)
    if not files:
        return None
    out = []
    for row in agreement.itertuples():
        value = (files.get(row.batch, {}).get("questions", {}).get(row.question, {}).get("expected_kappa")
                 if row.statistic == "cohen_kappa" else None)
        out.append("" if value is None else f"{value:.3f}")
    return out


def _number(value) -> str:
    return UNDEFINED if value == UNDEFINED or value is None else f"{value:.3f}"


def _interval(low, high) -> str:
    return "" if low is None or pd.isna(low) else f"[{low:.3f}, {high:.3f}]"
