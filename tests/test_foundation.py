"""Foundation: tiny models, config errors, atomic writes, the run lock, cell keys."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import transformers

from harness import atomic
from harness.config import ConfigError, load_study
from harness.hashing import content_key, hash_checkpoint
from harness.store import RunLockedError, RunStore
from harness.tiny_models import CAUSAL_FAMILIES, HEADS, HIDDEN, OUTLIER_CHANNELS

PROMPTS = ["The city council met on Tuesday to approve", "Scientists reported that the river"]


@pytest.mark.parametrize("family", CAUSAL_FAMILIES)
def test_tiny_causal_lms_load_offline_and_generate(tiny, family):
    path = tiny(family)
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path)
    assert model.config.hidden_size // model.config.num_attention_heads == HIDDEN // HEADS >= 32
    ids = tok(PROMPTS[0], return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids.shape[1]


def test_tiny_models_have_outlier_channels(llama_path):
    model = transformers.AutoModelForCausalLM.from_pretrained(llama_path)
    gain = model.model.layers[0].input_layernorm.weight
    others = [i for i in range(HIDDEN) if i not in OUTLIER_CHANNELS]
    assert gain[list(OUTLIER_CHANNELS)].abs().min() > 5 * gain[others].abs().max()


def test_tiny_scorers_load(bart_path, nli_path):
    bart = transformers.AutoModelForSeq2SeqLM.from_pretrained(bart_path)
    btok = transformers.AutoTokenizer.from_pretrained(bart_path)
    assert btok("").input_ids == [btok.bos_token_id, btok.eos_token_id]  # BART's empty source
    assert bart.config.is_encoder_decoder
    nli = transformers.AutoModelForSequenceClassification.from_pretrained(nli_path)
    ntok = transformers.AutoTokenizer.from_pretrained(nli_path)
    assert nli.config.id2label == {0: "SUPPORTS", 1: "REFUTES", 2: "NOT ENOUGH INFO"}
    enc = ntok(["A storm came."], ["Power lines were damaged."], return_tensors="pt")
    assert enc["token_type_ids"][0].tolist().count(1) > 0
    probs = nli(**enc).logits.softmax(-1)
    assert torch.allclose(probs.sum(-1), torch.ones(1))


def test_tiny_models_are_deterministic(tmp_path):
    from harness.tiny_models import build

    a, b = build("llama", tmp_path / "a"), build("llama", tmp_path / "b")
    assert hash_checkpoint(a) == hash_checkpoint(b)


@pytest.mark.vllm
@pytest.mark.parametrize("family", ["llama", "opt"])
def test_vllm_greedy_ids_equal_transformers(tiny, vllm_engine, family):
    from vllm import SamplingParams

    path = tiny(family)
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path)
    outs = vllm_engine(path).generate(PROMPTS, SamplingParams(temperature=0, max_tokens=24))
    for prompt, out in zip(PROMPTS, outs):
        ids = tok(prompt, return_tensors="pt").input_ids
        assert list(out.prompt_token_ids) == ids[0].tolist()
        ref = model.generate(ids, max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id)
        assert list(out.outputs[0].token_ids) == ref[0, ids.shape[1]:].tolist()


# --- config -------------------------------------------------------------------------------

def _write_study(tmp_path, body: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(body))
    return path


def _study(model_dir, extra: str = "", prune: str = "[]") -> str:
    return f"""
    name: s
    models: [{{name: m, path: {model_dir}}}]
    prune: {prune}
    tasks: [{{name: demo}}]
    {extra}
    """


def test_valid_study_loads(tmp_path, llama_path):
    study = load_study(_write_study(tmp_path, _study(llama_path, prune="[{method: wanda, structure: '2:4'}]")))
    assert study.prune[0].sparsity == 0.5 and study.prune[0].nm == (2, 4)
    assert study.models[0].path == llama_path


@pytest.mark.parametrize(
    "body, field",
    [
        ("extra", "colour: red"),
        ("prune", "[{method: wanda, sparsity: 1.5}]"),
        ("path", None),
    ],
)
def test_config_errors_name_file_and_field(tmp_path, llama_path, body, field):
    if body == "extra":
        text, expect = _study(llama_path, extra=field), "colour: unknown key"
    elif body == "prune":
        text, expect = _study(llama_path, prune=field), "prune[0].sparsity: sparsity must be in [0, 1) (got 1.5)"
    else:
        text, expect = _study(tmp_path / "nowhere"), "models[0].path: no such directory"
    path = _write_study(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_study(path)
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"{path}: ") and expect in message


# --- atomic writes, lock, keys --------------------------------------------------------------

def _slow_writer(path: str) -> None:
    def chunks(tmp):
        with open(tmp, "w") as fh:
            fh.write("partial ")
            fh.flush()
            time.sleep(60)
            fh.write("complete")

    atomic.write_with(path, chunks)


def test_writer_killed_mid_write_leaves_no_corrupt_artifact(tmp_path):
    target = tmp_path / "artifact.txt"
    atomic.write_text(target, "old complete")
    proc = multiprocessing.get_context("fork").Process(target=_slow_writer, args=(str(target),))
    proc.start()
    deadline = time.time() + 10
    while not any(p.name.startswith(".artifact.txt.") for p in tmp_path.iterdir()):
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert target.read_text() == "old complete"


def test_second_run_on_locked_directory_is_refused_and_lock_dies_with_holder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys,time; from harness.store import RunStore\n"
         "with RunStore(sys.argv[1]).lock():\n print('locked', flush=True); time.sleep(60)",
         str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
        with RunStore(tmp_path).lock():
            pass
    holder.kill()
    holder.wait()
    with RunStore(tmp_path).lock():  # released by the kernel when the holder died
        pass


def test_content_keys_and_checkpoint_hashes(tmp_path, llama_path):
    assert content_key({"a": 1, "b": [1, 2]}) == content_key({"b": [1, 2], "a": 1})
    assert content_key({"a": 1}) != content_key({"a": 2})
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(llama_path, copy)
    assert hash_checkpoint(copy) == hash_checkpoint(llama_path)
    (copy / "sparsity.json").write_text("{}")  # a report about the model is not the model
    (copy / "training.json").write_text('{"seconds": 97.1}')  # nor how long it trained here
    assert hash_checkpoint(copy) == hash_checkpoint(llama_path)
    with open(copy / "model.safetensors", "r+b") as fh:
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 1]))
    assert hash_checkpoint(copy) != hash_checkpoint(llama_path)


def test_manifest_records_provenance_and_stage_status(tmp_path):
    from harness.store import provenance

    store = RunStore(tmp_path)
    store.update_manifest(provenance=provenance({"torch": 0}))
    store.record_stage("abc", "generate", "done", seconds=1.5)
    manifest = store.read_manifest()
    assert manifest["provenance"]["packages"]["torch"] == torch.__version__.split("+")[0] or \
        manifest["provenance"]["packages"]["torch"].startswith("2.")
    assert manifest["cells"]["abc"]["generate"]["status"] == "done"


def test_cli_prints_config_errors_as_one_line(tmp_path, llama_path, capsys):
    from harness.cli.main import main

    path = _write_study(tmp_path, _study(llama_path, prune="[{method: wanda, sparsity: 1.5}]"))
    assert main(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "prune[0].sparsity" in err and str(path) in err


def test_example_study_is_a_valid_config():
    from harness.config import load_study

    example = Path(__file__).resolve().parents[1] / "examples" / "reference-study.yaml"
    study = load_study(example)
    assert [p.key for p in study.prune] == ["wanda-0.5", "wanda-2of4", "sparsegpt-0.5", "sparsegpt-2of4"]
    assert study.prune[0].calibration.source == str(example.parent / "c4-128x4096.pt")
    assert {t.name for t in study.tasks} == {"factcc", "polytope", "summeval", "legal_contracts", "rct"}
    zero_shot_seven = {"boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa"}
    assert zero_shot_seven < set(study.quality.tasks) and {"triviaqa"} & set(study.quality.tasks)
    assert [c.name for c in study.quality.corpora] == ["wikitext2", "c4"]


def test_checkpoint_hash_cache_skips_unchanged_files_and_sees_changes(tmp_path, llama_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(llama_path, copy)
    cache = {}
    first = hash_checkpoint(copy, cache)
    entry = cache[str(copy.resolve())]
    entry["hash"] = "remembered"  # an unchanged folder is not read again
    assert hash_checkpoint(copy, cache) == "remembered"
    (copy / "config.json").write_text((copy / "config.json").read_text() + " ")
    assert hash_checkpoint(copy, cache) not in ("remembered", first)


def test_hub_models_resolve_from_the_local_cache_only(tmp_path, llama_path, monkeypatch):
    import shutil

    import huggingface_hub.constants

    from harness.config import ModelConfig
    from harness.models import ModelNotAvailableError, resolve_model_dir

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    commit = "a" * 40
    repo = tmp_path / "models--org--tiny"
    shutil.copytree(llama_path, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    directory, resolved = resolve_model_dir(ModelConfig(name="t", hub_id="org/tiny", revision="main"))
    assert resolved == commit and (directory / "config.json").exists()  # the pinned commit is recorded
    with pytest.raises(ModelNotAvailableError, match="org/other@main is not in the local Hugging Face cache"):
        resolve_model_dir(ModelConfig(name="t", hub_id="org/other", revision="main"), allow_downloads=True)


def test_help_lists_every_subcommand(capsys):
    from harness.cli.main import main

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for command in ("annotate", "bench", "demo", "generate", "perplexity", "prune", "report", "run",
                    "score", "status", "tasks", "tiny-models", "train-summac-conv", "validate-metrics"):
        assert f"    {command}" in out


def test_two_prune_specs_sharing_a_checkpoint_folder_are_refused(tmp_path, llama_path):
    # A different calibration seed is a distinct checkpoint (wanda-0.5-s1); other calibration
    # settings are not part of the folder name.
    seeds = "[{method: wanda, sparsity: 0.5}, {method: wanda, sparsity: 0.5, calibration: {seed: 1}}]"
    study = load_study(_write_study(tmp_path, _study(llama_path, prune=seeds)))
    assert [p.key for p in study.prune] == ["wanda-0.5", "wanda-0.5-s1"]
    prune = "[{method: wanda, sparsity: 0.5}, {method: wanda, sparsity: 0.5, calibration: {nsamples: 4}}]"
    with pytest.raises(ConfigError, match="prune\\[1\\] would share the checkpoint folder 'wanda-0.5'"):
        load_study(_write_study(tmp_path, _study(llama_path, prune=prune)))


def test_store_parses_a_generations_file_once_per_version(tmp_path):
    """Repeated reads of an unchanged file return equal records; an atomic rewrite and an
    in-place edit of another size are both seen."""
    from harness.records import GenerationRecord, ModelIdentity

    def record(text):
        return GenerationRecord(doc_id="d1", prompt_id="A", prompt_hash="h", text=text,
                                output_token_ids=[1], prompt_tokens=1, output_tokens=1,
                                finish_reason="stop", truncated=False, backend="hf", sampling={},
                                model=ModelIdentity(name="m", source="m", checkpoint_hash="0" * 16))

    store = RunStore(tmp_path)
    path = store.generation_path("cell")
    atomic.write_jsonl(path, [record("first")])
    assert [r.text for r in store.read_generations("cell")] == ["first"]
    assert store.read_generations("cell") == store.read_generations("cell")
    atomic.write_jsonl(path, [record("again")])  # same size, new inode
    assert [r.text for r in store.read_generations("cell")] == ["again"]
    path.write_text(path.read_text().replace("again", "edited by hand"))
    assert [r.text for r in store.read_generations("cell")] == ["edited by hand"]
