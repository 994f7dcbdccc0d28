"""SummaC-Conv (Laban et al., 2022), released setup: sentence chunks, entailment only,
percentile bins, mean aggregation.

For each of the first 10 summary chunks, a count histogram of its entailment probabilities
over source chunks (23 bins with the published edges); ``mlp`` = Linear(23 -> 1) per row; m =
mean over the non-empty rows (0 when none); ``layer_final`` = Linear(3 -> 2) on [m, m, m];
score = softmax(logits)[1]. Weights load from a checkpoint with the released key layout
(mlp.weight, mlp.bias, layer_final.weight, layer_final.bias) or are trained here by
:func:`train_summac_conv`, which saves the same layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.errors import PrunescopeError
from harness.scoring.nli import NLIImage

BIN_EDGES = np.array([0.0, 0.01, 0.02, 0.03, 0.04, 0.07, 0.13, 0.37, 0.90, 0.91, 0.92, 0.93,
                      0.94, 0.95, 0.955, 0.96, 0.965, 0.97, 0.975, 0.98, 0.985, 0.99, 0.995, 1.0])
N_BINS = len(BIN_EDGES) - 1  # 23
ROWS = 10
KEYS = ("mlp.weight", "mlp.bias", "layer_final.weight", "layer_final.bias")


class ConvWeightsError(PrunescopeError):
    """A SummaC-Conv checkpoint or training file that cannot be used."""


def histograms(image: NLIImage) -> np.ndarray:
    """(10, 23) count histograms of the first 10 summary chunks' entailment columns.

    With no chunk on either side the published code scores a 1 x 1 image of zeros, i.e. one
    row with a single count in the lowest bin; so do we."""
    rows = np.zeros((ROWS, N_BINS))
    if image.entail.size == 0:
        rows[0, 0] = 1
        return rows
    for m in range(min(ROWS, image.entail.shape[1])):
        rows[m] = np.histogram(image.entail[:, m], bins=BIN_EDGES, range=(0.0, 1.0))[0]
    return rows


def conv_head():
    """The two layers, as a torch module whose state dict has the released key layout."""
    import torch

    class ConvHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = torch.nn.Linear(N_BINS, 1)
            self.layer_final = torch.nn.Linear(3, 2)

        def forward(self, hist):  # (batch, 10, 23) -> logits (batch, 2)
            per_row = self.mlp(hist).squeeze(-1)
            non_empty = (hist.sum(dim=-1) > 0).to(per_row.dtype)
            count = non_empty.sum(dim=-1)
            mean = (per_row * non_empty).sum(dim=-1) / count.clamp(min=1)
            mean = torch.where(count > 0, mean, torch.zeros_like(mean))
            return self.layer_final(mean.unsqueeze(-1).expand(-1, 3))

    return ConvHead()


def conv_scores(head, hists: np.ndarray) -> np.ndarray:
    """P(consistent) for a stack of (10, 23) histograms."""
    import torch

    with torch.inference_mode():
        logits = head(torch.as_tensor(hists, dtype=torch.float32))
        return torch.softmax(logits, dim=-1)[:, 1].double().numpy()


def load_conv_head(path: str | Path):
    """A head from a checkpoint with the released key layout (weights_only load)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as exc:
        raise ConvWeightsError(f"{path}: cannot load SummaC-Conv weights: {exc}") from None
    missing = [k for k in KEYS if k not in state]
    if missing:
        raise ConvWeightsError(f"{path}: SummaC-Conv weights lack {', '.join(missing)}")
    head = conv_head()
    try:
        head.load_state_dict({k: state[k] for k in KEYS})
    except RuntimeError as exc:
        raise ConvWeightsError(f"{path}: SummaC-Conv weights have the wrong shapes: {exc}") from None
    return head.eval()


def save_conv_head(head, path: str | Path) -> None:
    import io

    import torch

    from harness.atomic import write_bytes

    buffer = io.BytesIO()
    torch.save({k: v.detach().clone() for k, v in head.state_dict().items()}, buffer)
    write_bytes(path, buffer.getvalue())


def train_summac_conv(pairs_jsonl: str | Path, nli_model: str | Path, out: str | Path, *,
                      epochs: int = 20, seed: int = 0, device: str = "cpu",
                      heldout_fraction: float = 0.2, batch_size: int = 16,
                      learning_rate: float = 1e-2, note: str | None = None) -> dict:
    """Train the Conv head on JSONL lines {"source", "summary", "label": 1 consistent / 0 not}.

    Histograms come from the NLI model once; the head trains with cross-entropy and Adam for a
    fixed number of full-batch epochs from a fixed seed, on a seeded split; the held-out
    balanced accuracy is printed and written with the weights to ``<out>.json``, together with
    ``note`` (e.g. that this is a demo head), which scorer provenance reports."""
    import torch
    from sklearn.metrics import balanced_accuracy_score

    from harness.atomic import write_json
    from harness.scoring.loading import load_scorer
    from harness.scoring.nli import nli_images
    from harness.scoring.splitting import MAX_SOURCE_CHUNKS, chunks, splitter_name

    sources, summaries, labels = read_training_pairs(pairs_jsonl)
    nli = load_scorer(nli_model, "classifier", device=device)
    documents = [(chunks(s, MAX_SOURCE_CHUNKS), chunks(y)) for s, y in zip(sources, summaries)]
    images = nli_images(nli, documents, batch_size=batch_size)
    hists = torch.as_tensor(np.stack([histograms(im) for im in images]), dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.long)

    perm = np.random.default_rng(seed).permutation(len(labels))
    n_held = max(1, int(round(len(labels) * heldout_fraction)))
    held, train = perm[:n_held], perm[n_held:]
    if len(train) == 0:
        raise ConvWeightsError(f"{pairs_jsonl}: too few pairs ({len(labels)}) to hold some out")
    torch.manual_seed(seed)
    head = conv_head()
    optimizer = torch.optim.Adam(head.parameters(), lr=learning_rate)
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = loss_fn(head(hists[train]), y[train])
        loss.backward()
        optimizer.step()
    head.eval()
    with torch.inference_mode():
        predicted = head(hists[held]).argmax(dim=-1).numpy()
    balanced = float(balanced_accuracy_score(labels[held], predicted))
    print(f"SummaC-Conv held-out balanced accuracy: {balanced:.4f} "
          f"({len(held)} held out, {len(train)} trained)")
    save_conv_head(head, out)
    report = {"balanced_accuracy": balanced, "epochs": epochs, "seed": seed,
              "learning_rate": learning_rate, "n_train": int(len(train)),
              "n_heldout": int(len(held)), "nli": nli.provenance, "splitter": splitter_name(),
              "final_train_loss": float(loss.item()), "note": note}
    write_json(Path(f"{out}.json"), report)
    return report


def read_training_pairs(path: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    from harness.jsonl import json_objects

    sources, summaries, labels = [], [], []
    for number, obj in json_objects(path, ConvWeightsError):
        for field, kind in (("source", str), ("summary", str), ("label", int)):
            if not isinstance(obj.get(field), kind) or isinstance(obj.get(field), bool):
                raise ConvWeightsError(f"{path}: line {number}: field {field!r} must be a {kind.__name__}")
        if obj["label"] not in (0, 1):
            raise ConvWeightsError(f"{path}: line {number}: field 'label' must be 0 or 1")
        sources.append(obj["source"])
        summaries.append(obj["summary"])
        labels.append(obj["label"])
    if len(set(labels)) < 2:
        raise ConvWeightsError(f"{path}: needs pairs of both labels (0 and 1)")
    return sources, summaries, np.array(labels)


def score(batch, scorers) -> dict[str, list]:
    """Metric-registry entry point (the NLI images are shared with SummaC-ZS)."""
    hists = np.stack([histograms(image) for image in scorers.nli_images(batch)])
    return {"summac_conv": list(conv_scores(scorers.conv_head(), hists))}


def provenance(scorers) -> dict:
    import json

    from harness.hashing import hash_file

    path = scorers.config.summac_conv_weights
    training = Path(f"{path}.json") if path is not None else None
    return {**scorers.nli_provenance(),
            "weights": None if path is None else str(path),
            "weights_hash": None if path is None else hash_file(path)[:16],
            "training": json.loads(training.read_text()) if training and training.exists() else None}
