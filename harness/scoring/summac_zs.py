"""SummaC-ZS (Laban et al., 2022): mean over summary chunks of the best entailment by any
source chunk (optionally minus the best contradiction). No chunk on either side gives 0,
as in the published model."""

from __future__ import annotations

from harness.scoring.nli import NLIImage


def summac_zs(image: NLIImage, use_contradiction: bool = False) -> float:
    if image.entail.size == 0:
        return 0.0
    per_sentence = image.entail.max(axis=0)
    if use_contradiction:
        per_sentence = per_sentence - image.contra.max(axis=0)
    return float(per_sentence.mean())
