"""What to prune and with which calibration data: plain dataclasses, validated on creation.

Kept free of pydantic so that ``harness.pruning`` imports with torch and transformers alone
(the study config embeds these dataclasses and pydantic validates them there).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from harness.errors import PrunescopeError
from harness.pruning import registry
from harness.pruning.structured.l0_spec import L0Spec
from harness.pruning.structured.spec import STRUCTURED_METHODS, StructuredSpec


def __getattr__(name):  # METHODS follows the registry, including methods registered later
    if name == "METHODS":
        return tuple(registry.METHODS)
    raise AttributeError(f"module 'harness.pruning.spec' has no attribute {name!r}")


class SpecError(PrunescopeError, ValueError):
    """An impossible pruning or calibration setting (a ValueError too, so pydantic reports it
    with the config field it came from)."""


@dataclass(frozen=True)
class OWLSpec:
    """Outlier-weighted layerwise sparsity (Yin et al., 2024)."""

    M: float = 5.0  # an outlier is a Wanda score above M times its layer's mean
    lam: float = 0.08  # per-block sparsities lie within target +/- lam

    def __post_init__(self):
        if self.M <= 0:
            raise SpecError(f"owl.M must be > 0 (got {self.M})")
        if not 0 <= self.lam < 1:
            raise SpecError(f"owl.lam must be in [0, 1) (got {self.lam})")


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
            raise SpecError(f"calibration.nsamples must be >= 1 (got {self.nsamples})")
        if self.seqlen < 2:
            raise SpecError(f"calibration.seqlen must be >= 2 (got {self.seqlen})")


@dataclass(frozen=True)
class PruneSpec:
    """One pruning configuration. ``structure`` is "unstructured" or "N:M" (e.g. "2:4"),
    where N of every M consecutive input weights are zeroed; then ``sparsity`` is N/M.
    Structured methods (``STRUCTURED_METHODS``) take their settings from ``structured``; their
    ``sparsity`` is the share of prunable parameters removed, and ``structure`` is set to
    "structured" (the same kept counts in every block), "structured-global" (per-block
    counts) or "shape-<label>" (an explicit ``structured.target_shape``)."""

    method: str
    sparsity: float = 0.5
    structure: str = "unstructured"
    owl: OWLSpec | None = None
    magnitude_scope: str = "matrix"  # magnitude only: one threshold per "matrix" or per "row"
    blocksize: int = 128  # SparseGPT only
    percdamp: float = 0.01  # SparseGPT only
    calibration: CalibrationSpec = field(default_factory=CalibrationSpec)
    structured: StructuredSpec | None = None

    def __post_init__(self):
        try:
            method = registry.get(self.method)
        except ValueError as exc:
            raise SpecError(str(exc)) from None
        if self.is_structured:
            self._structured_defaults()
        elif self.structured is not None:
            raise SpecError(f"structured settings apply to {', '.join(STRUCTURED_METHODS)}, not {self.method!r}")
        kind = registry.structure_kind(self.structure)
        if kind not in method.structures:
            if kind not in {k for m in registry.METHODS.values() for k in m.structures}:
                parse_nm(self.structure)  # raises: neither a known structure nor N:M
            raise SpecError(f"structure {self.structure!r} is not supported by {self.method} "
                            f"(supports {', '.join(method.structures)})")
        if kind == "nm":
            n, m = parse_nm(self.structure)
            object.__setattr__(self, "sparsity", n / m)
        if kind != "unstructured" and self.owl is not None:
            raise SpecError(
                f"owl allocates unstructured sparsity per block; it cannot be combined "
                f"with structure {self.structure!r}"
            )
        if not 0 <= self.sparsity < 1:
            raise SpecError(f"sparsity must be in [0, 1) (got {self.sparsity})")
        if self.owl is not None and not 0 <= self.sparsity - self.owl.lam <= self.sparsity + self.owl.lam < 1:
            raise SpecError(
                f"owl: per-block sparsities {self.sparsity:g} +/- owl.lam {self.owl.lam:g} must stay in [0, 1); lower owl.lam"
            )
        if self.magnitude_scope not in ("matrix", "row"):
            raise SpecError(f"magnitude_scope must be 'matrix' or 'row' (got {self.magnitude_scope!r})")
        if self.blocksize < 1:
            raise SpecError(f"blocksize must be >= 1 (got {self.blocksize})")
        if self.percdamp <= 0:
            raise SpecError(f"percdamp must be > 0 (got {self.percdamp})")

    def _structured_defaults(self) -> None:
        derived = self.structure in ("unstructured", "structured", "structured-global") or self.structure.startswith("shape-")
        if not derived or self.owl is not None:  # (a derived structure comes back on replace())
            raise SpecError(f"method {self.method!r} removes whole units; it takes no structure "
                            f"{self.structure!r} and no owl (give structured settings instead)")
        settings = self.structured or StructuredSpec()
        if self.method == "l0":  # learned gates are binarised with the same count in every block
            if settings.allocation != "uniform":
                raise SpecError("method 'l0' keeps the same units per block; it takes no allocation 'global'")
            settings = replace(settings, l0=settings.l0 or L0Spec())
        elif settings.l0 is not None:
            raise SpecError(f"l0 settings apply to method 'l0', not {self.method!r}")
        object.__setattr__(self, "structured", settings)
        shape = settings.target_shape
        structure = "structured-global" if settings.allocation == "global" else "structured"
        object.__setattr__(self, "structure", f"shape-{shape.label}" if shape else structure)

    @property
    def is_structured(self) -> bool:
        return self.method in STRUCTURED_METHODS

    @property
    def nm(self) -> tuple[int, int] | None:
        return parse_nm(self.structure) if registry.structure_kind(self.structure) == "nm" else None

    @property
    def seeded(self) -> bool:
        """Whether the spec has random choices (calibration samples), so its seed matters."""
        return registry.get(self.method).needs_calibration or self.owl is not None

    @property
    def seed(self) -> int | None:
        """The seed of every random choice of this spec (None for a spec without any)."""
        return self.calibration.seed if self.seeded else None

    @property
    def key(self) -> str:
        """Readable folder name of the pruned checkpoint, e.g. ``wanda-2of4``, ``sparsegpt-0.5``
        or, for calibration seed 2, ``sparsegpt-0.5-s2``."""
        return prune_name(self.method, self.sparsity, self.structure, self.owl is not None,
                          nm_sep="of", seed=self.seed)

    def to_dict(self) -> dict:
        data = asdict(self)
        if data["structured"] is None:  # unstructured specs keep the keys they always had
            del data["structured"]
        return data


def prune_name(method: str, sparsity: float, structure: str, owl: bool, nm_sep: str = ":",
               seed: int | None = None) -> str:
    """A system's short name: ``dense``, ``wanda-0.5``, ``sparsegpt-owl-0.6``, ``wanda-2:4``,
    ``bonsai-0.5``, ``bonsai-global-0.5``, ``bonsai-shape-a1f128`` (``nm_sep="of"`` gives
    ``wanda-2of4``, the checkpoint folder name); a calibration seed other than 0 (the default)
    is appended: ``wanda-0.5-s2``."""
    if method == "dense":
        return "dense"
    if structure in ("unstructured", "structured"):
        amount = f"{sparsity:g}"
    elif structure == "structured-global":
        amount = f"global-{sparsity:g}"
    else:
        amount = structure.replace(":", nm_sep)
    return f"{method}{'-owl' if owl else ''}-{amount}{f'-s{seed}' if seed else ''}"


def parse_nm(structure: str) -> tuple[int, int]:
    """Parse "N:M" into (N, M) with 0 < N < M."""
    try:
        n, m = (int(part) for part in structure.split(":"))
    except ValueError:
        raise SpecError(
            f"structure must be 'unstructured' or 'N:M' such as '2:4' (got {structure!r})"
        ) from None
    if not 0 < n < m:
        raise SpecError(f"structure {structure!r} needs 0 < N < M")
    return n, m
