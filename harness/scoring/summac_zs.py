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


def score(batch, scorers) -> dict[str, list]:
    """Metric-registry entry point (the NLI images are shared with SummaC-Conv)."""
    use = scorers.config.summac_zs_use_contradiction
    return {"summac_zs": [summac_zs(image, use) for image in scorers.nli_images(batch)]}


def provenance(scorers) -> dict:
    return scorers.nli_provenance()
