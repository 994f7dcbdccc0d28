"""Labelled claims: records of (document, claim, label), as in the reference study's prepared
FactCC, Polytope and SummEval files (a JSON object keyed by record id; ``label`` "1" for a
consistent claim, "0" for an inconsistent one; optional ``cut`` "val" / "test").

Labels may be strings or integers ("1", 1, "0", 0); which of them marks an inconsistent
(hallucinated) claim is a parameter, "0" by default. A record without a label, with another
label value, with an empty claim or an unknown cut is refused with the file, record and
field; so is a file whose claims hold one class only, or whose cuts do not each hold both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.errors import DataError
from tasks.types import TaskData

CLAIM, LABEL, CUT = "claim", "label", "cut"
CUTS = ("val", "test")


@dataclass(frozen=True)
class LabelledClaims:
    file: str
    ids: list[str]
    documents: list[str]
    claims: list[str]
    hallucinated: np.ndarray  # bool per claim
    cuts: list[str] | None  # per claim, or None when the file has no cut field

    @property
    def protocol_cut(self) -> list[str] | None:
        """The cuts when the file has both val and test (threshold on val, measured on
        test); None when it has one cut or none (cross-validation)."""
        return self.cuts if self.cuts is not None and set(self.cuts) == set(CUTS) else None


def labelled_claims(data: TaskData, file: str, hallucinated_label: str = "0",
                    note: str = "") -> LabelledClaims:
    """The claims of a loaded claim file. ``note`` is appended to a one-class refusal (e.g.
    that ``--limit`` kept only the first records)."""
    if hallucinated_label not in ("0", "1"):
        raise DataError(f"hallucinated_label must be '0' or '1' (got {hallucinated_label!r})")
    problems, ids, documents, claims, labels, cuts = [], [], [], [], [], []
    has_cut = [CUT in r.extra and r.extra[CUT] is not None for r in data.records]
    for record, cut_present in zip(data.records, has_cut):
        where = f"{file}: record '{record.id}'"
        claim, label = record.extra.get(CLAIM), _label(record.extra.get(LABEL))
        if not isinstance(claim, str) or not claim.strip():
            problems.append(f"{where}: field '{CLAIM}': "
                            f"{'missing' if claim is None else 'empty or not text'} claim")
        if label is None:
            value = record.extra.get(LABEL)
            problems.append(f"{where}: field '{LABEL}': " + (
                "missing label (each claim needs \"1\" consistent or \"0\" inconsistent)"
                if value is None else f"label {value!r} is not \"0\" or \"1\" (string or integer)"))
        if any(has_cut) and not cut_present:
            problems.append(f"{where}: field '{CUT}': missing, while other records have a cut")
        elif cut_present and record.extra[CUT] not in CUTS:
            problems.append(f"{where}: field '{CUT}': {record.extra[CUT]!r} is not one of {list(CUTS)}")
        ids.append(record.id)
        documents.append(record.document)
        claims.append(claim)
        labels.append(label)
        cuts.append(record.extra.get(CUT))
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise DataError(problems[0] + more)
    hallucinated = np.array([label == hallucinated_label for label in labels], bool)
    _check_classes(file, hallucinated, hallucinated_label, note)
    result = LabelledClaims(file, ids, documents, claims, hallucinated, cuts if any(has_cut) else None)
    if result.protocol_cut is not None:
        for cut in CUTS:
            part = hallucinated[np.array(cuts) == cut]
            _check_classes(f"{file}: cut '{cut}'", part, hallucinated_label, note)
    return result


def _label(value) -> str | None:
    """"0" / "1" from a string or integer label; None for anything else (bools included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value in (0, 1):
        return str(value)
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return value.strip()
    return None


def _check_classes(where: str, hallucinated: np.ndarray, hallucinated_label: str, note: str) -> None:
    if hallucinated.all() or not hallucinated.any():
        consistent_label = str(1 - int(hallucinated_label))
        kind = "inconsistent" if hallucinated.any() else "consistent"
        value = hallucinated_label if hallucinated.any() else consistent_label
        raise DataError(
            f"{where}: all {len(hallucinated)} claims have label \"{value}\" ({kind}); AUC and "
            f"balanced accuracy need claims of both labels (\"{hallucinated_label}\" inconsistent "
            f"and \"{consistent_label}\" consistent){note}")
