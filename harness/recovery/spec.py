"""How to fine-tune a pruned checkpoint: plain dataclasses, validated on creation.

Kept free of pydantic and torch (like ``harness.pruning.spec``) so the study config can embed
them and reading a config imports no model library.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from harness.pruning.spec import CalibrationSpec, SpecError

METHODS = ("lora", "full")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Settings that change how often work is saved, not what is computed (kept out of the key).
NOT_RESULT_FIELDS = ("save_every",)


@dataclass(frozen=True)
class LoRASpec:
    """A LoRA adapter (Hu et al., 2022) trained through ``peft``; ``target_modules`` is a list
    of module names or ``"all-linear"`` (every Linear but the output head, any model family)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: str | tuple[str, ...] = "all-linear"

    def __post_init__(self):
        if self.rank < 1:
            raise SpecError(f"lora.rank must be >= 1 (got {self.rank})")
        if self.alpha <= 0:
            raise SpecError(f"lora.alpha must be > 0 (got {self.alpha})")
        if not 0 <= self.dropout < 1:
            raise SpecError(f"lora.dropout must be in [0, 1) (got {self.dropout})")
        if isinstance(self.target_modules, list):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if not self.target_modules:
            raise SpecError("lora.target_modules must name at least one module (or be 'all-linear')")


@dataclass(frozen=True)
class RecoverySpec:
    """One recovery fine-tuning run on a pruned checkpoint.

    ``data`` says where training windows come from, exactly as a pruning calibration does
    (``task:<name>``, a text/JSONL file, or pre-tokenized ids): ``data.nsamples`` windows of
    ``data.seqlen`` tokens, seeded by ``data.seed``. Training takes ``steps`` optimizer steps
    of ``batch_size * grad_accum`` windows each, cycling over the windows in a seeded order.
    ``apply_to`` (study only) names the prune specs to recover, by their checkpoint folder
    (e.g. ``wanda-2of4``); empty: every prune spec."""

    method: str
    steps: int = 100
    lr: float = 1e-4
    batch_size: int = 4
    grad_accum: int = 1
    weight_decay: float = 0.0
    warmup_steps: int = 0
    seed: int = 0
    precision: str = "auto"  # auto: fp32 on the CPU, bf16 autocast on a GPU
    save_every: int = 50  # resumable training state every this many steps
    data: CalibrationSpec = field(default_factory=lambda: CalibrationSpec(nsamples=128, seqlen=512))
    lora: LoRASpec = field(default_factory=LoRASpec)
    apply_to: tuple[str, ...] = ()

    def __post_init__(self):
        if self.method not in METHODS:
            raise SpecError(f"method must be one of {', '.join(METHODS)} (got {self.method!r})")
        if self.precision not in PRECISIONS:
            raise SpecError(f"precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})")
        for name in ("steps", "batch_size", "grad_accum", "save_every"):
            if getattr(self, name) < 1:
                raise SpecError(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.lr <= 0:
            raise SpecError(f"lr must be > 0 (got {self.lr})")
        if self.weight_decay < 0 or self.warmup_steps < 0:
            raise SpecError("weight_decay and warmup_steps must be >= 0")
        object.__setattr__(self, "apply_to", tuple(self.apply_to))

    @property
    def key(self) -> str:
        """Readable folder suffix: ``lora-r8`` or ``full``."""
        return f"lora-r{self.lora.rank}" if self.method == "lora" else "full"

    def to_dict(self) -> dict:
        """Everything that changes the trained weights (the content of a cache key)."""
        spec = asdict(self)
        for name in (*NOT_RESULT_FIELDS, "apply_to"):
            spec.pop(name)
        if self.method != "lora":
            spec.pop("lora")
        return spec
