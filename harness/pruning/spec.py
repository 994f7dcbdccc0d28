"""What to prune and with which calibration data: plain dataclasses, validated on creation.

Kept free of pydantic so that ``harness.pruning`` imports with torch and transformers alone
(the study config embeds these dataclasses and pydantic validates them there).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

METHODS = ("magnitude", "wanda", "sparsegpt")


@dataclass(frozen=True)
class OWLSpec:
    """Outlier-weighted layerwise sparsity (Yin et al., 2024)."""

    M: float = 5.0  # an outlier is a Wanda score above M times its layer's mean
    lam: float = 0.08  # per-block sparsities lie within target +/- lam

    def __post_init__(self):
        if self.M <= 0:
            raise ValueError(f"owl.M must be > 0 (got {self.M})")
        if not 0 <= self.lam < 1:
            raise ValueError(f"owl.lam must be in [0, 1) (got {self.lam})")


@dataclass(frozen=True)
class CalibrationSpec:
    """Calibration samples: ``source`` is ``task:<name>`` (that task's documents), a text or
    JSONL file, or a file of pre-tokenized ids [nsamples, seqlen] (.pt, .npy, .safetensors)."""

    source: str = "task:demo"
    nsamples: int = 128
    seqlen: int = 2048
    seed: int = 0

    def __post_init__(self):
        if self.nsamples < 1:
            raise ValueError(f"calibration.nsamples must be >= 1 (got {self.nsamples})")
        if self.seqlen < 2:
            raise ValueError(f"calibration.seqlen must be >= 2 (got {self.seqlen})")


@dataclass(frozen=True)
class PruneSpec:
    """One pruning configuration. ``structure`` is "unstructured" or "N:M" (e.g. "2:4"),
    where N of every M consecutive input weights are zeroed; then ``sparsity`` is N/M."""

    method: str
    sparsity: float = 0.5
    structure: str = "unstructured"
    owl: OWLSpec | None = None
    magnitude_scope: str = "matrix"  # magnitude only: one threshold per "matrix" or per "row"
    blocksize: int = 128  # SparseGPT only
    percdamp: float = 0.01  # SparseGPT only
    calibration: CalibrationSpec = field(default_factory=CalibrationSpec)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)} (got {self.method!r})")
        if self.structure != "unstructured":
            n, m = parse_nm(self.structure)
            object.__setattr__(self, "sparsity", n / m)
            if self.owl is not None:
                raise ValueError(
                    f"owl allocates unstructured sparsity per block; it cannot be combined "
                    f"with structure {self.structure!r}"
                )
        if not 0 <= self.sparsity < 1:
            raise ValueError(f"sparsity must be in [0, 1) (got {self.sparsity})")
        if self.magnitude_scope not in ("matrix", "row"):
            raise ValueError(f"magnitude_scope must be 'matrix' or 'row' (got {self.magnitude_scope!r})")

    @property
    def nm(self) -> tuple[int, int] | None:
        return None if self.structure == "unstructured" else parse_nm(self.structure)

    @property
    def key(self) -> str:
        """Readable folder name of the pruned checkpoint, e.g. ``wanda-2of4`` or ``sparsegpt-0.5``."""
        amount = self.structure.replace(":", "of") if self.nm else f"{self.sparsity:g}"
        return f"{self.method}{'-owl' if self.owl else ''}-{amount}"

    def to_dict(self) -> dict:
        return asdict(self)


def parse_nm(structure: str) -> tuple[int, int]:
    """Parse "N:M" into (N, M) with 0 < N < M."""
    try:
        n, m = (int(part) for part in structure.split(":"))
    except ValueError:
        raise ValueError(
            f"structure must be 'unstructured' or 'N:M' such as '2:4' (got {structure!r})"
        ) from None
    if not 0 < n < m:
        raise ValueError(f"structure {structure!r} needs 0 < N < M")
    return n, m
