"""Calibration sources, pruned checkpoints (transformers and vLLM load them), perplexity and
the `prune` / `perplexity` commands."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from harness.cli.main import main
from harness.pruning import CalibrationSpec, PruneSpec, prune_checkpoint
from harness.pruning.calibration import CalibrationError, load_calibration
from harness.pruning.perplexity import PerplexityError, perplexity

TEXT = " ".join(
    f"Report {i}: the council approved {i + 3} new buses, and the river was cleaner than in year {1990 + i}."
    for i in range(60)
)


@pytest.fixture(scope="module")
def tokenizer(llama_path):
    return transformers.AutoTokenizer.from_pretrained(llama_path)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "calib.txt"
    path.write_text(TEXT)
    return path


def test_text_calibration_windows_come_from_the_text_at_recorded_offsets(text_file, tokenizer):
    spec = CalibrationSpec(source=str(text_file), nsamples=5, seqlen=40, seed=7)
    ids, info = load_calibration(spec, tokenizer)
    stream = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert ids.shape == (5, 40) and ids.dtype == torch.int64
    for row, start in zip(ids.tolist(), info["sample_starts"]):
        assert row == stream[start:start + 40]
    assert info["seed"] == 7 and info["tokens"] == len(stream) and len(info["data_hash"]) == 16
    again, _ = load_calibration(spec, tokenizer)
    other, other_info = load_calibration(CalibrationSpec(source=str(text_file), nsamples=5, seqlen=40, seed=8), tokenizer)
    assert torch.equal(ids, again) and other_info["sample_starts"] != info["sample_starts"]


def test_jsonl_calibration_reads_text_fields(tmp_path, tokenizer):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"text": TEXT[i * 500:(i + 1) * 500]}) for i in range(8)) + "\n")
    ids, info = load_calibration(CalibrationSpec(source=str(path), nsamples=3, seqlen=32), tokenizer)
    assert ids.shape == (3, 32) and info["source"] == str(path)
    path.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"body": "no text"}) + "\n")
    with pytest.raises(CalibrationError, match=r"docs\.jsonl: line 2: field 'text' \(or 'document'\) missing"):
        load_calibration(CalibrationSpec(source=str(path), nsamples=1, seqlen=2), tokenizer)


@pytest.mark.parametrize("suffix", [".pt", ".npy", ".safetensors"])
def test_pretokenized_calibration_is_used_exactly(tmp_path, tokenizer, suffix):
    ids = torch.randint(0, 1000, (6, 50), generator=torch.Generator().manual_seed(1))
    path = tmp_path / f"ids{suffix}"
    if suffix == ".pt":
        torch.save(ids, path)
    elif suffix == ".npy":
        np.save(path, ids.numpy().astype(np.int32))
    else:
        save_file({"input_ids": ids}, path)
    got, info = load_calibration(CalibrationSpec(source=str(path), nsamples=4, seqlen=48), tokenizer)
    assert torch.equal(got, ids[:4, :48]) and info["sample_rows"] == [0, 1, 2, 3]
    with pytest.raises(CalibrationError, match=r"holds 6 samples x 50 tokens; calibration asks for nsamples = 8"):
        load_calibration(CalibrationSpec(source=str(path), nsamples=8, seqlen=48), tokenizer)


def test_calibration_text_too_short_is_refused(tmp_path, tokenizer):
    path = tmp_path / "short.txt"
    path.write_text("Only a few words here.")
    with pytest.raises(CalibrationError, match=r"short\.txt: calibration text too short: \d+ tokens, need at least calibration\.seqlen = 128"):
        load_calibration(CalibrationSpec(source=str(path), nsamples=2, seqlen=128), tokenizer)
    with pytest.raises(CalibrationError, match="calibration file not found"):
        load_calibration(CalibrationSpec(source=str(tmp_path / "missing.txt")), tokenizer)


@pytest.fixture(scope="module")
def pruned_dir(llama_path, text_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "wanda-2of4"
    spec = PruneSpec(method="wanda", structure="2:4",
                     calibration=CalibrationSpec(source=str(text_file), nsamples=4, seqlen=64))
    report = prune_checkpoint(llama_path, spec, out, device="cpu")
    return out, report


def test_pruned_checkpoint_is_a_plain_hf_checkpoint_with_its_report(pruned_dir, llama_path):
    out, report = pruned_dir
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "sparsity.json"} <= {
        p.name for p in out.iterdir()}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "temporary folders left behind"
    assert "sparsity_config" not in json.loads((out / "config.json").read_text())
    saved = json.loads((out / "sparsity.json").read_text())
    assert saved["method"] == "wanda" and saved["nm_valid"] is True and saved["schema_version"] == 1
    assert saved["calibration"]["source"] == report["calibration"]["source"] and saved["wall_time_s"] > 0
    assert saved["peak_memory_bytes"] > 0 and saved["cholesky_retries"] == []
    weights = load_file(out / "model.safetensors")
    for name, tensor in weights.items():
        assert not (tensor == 0).logical_and(tensor.signbit()).any(), f"{name} holds -0.0"
    zeros = {n: float((t == 0).float().mean()) for n, t in weights.items() if ".layers." in n and t.ndim == 2}
    assert zeros == pytest.approx({f"{n}.weight": s for n, s in saved["modules"].items()})
    dense = load_file(llama_path / "model.safetensors")
    assert torch.equal(weights["lm_head.weight"], dense["lm_head.weight"])


@pytest.mark.vllm
def test_pruned_checkpoint_generates_in_vllm(pruned_dir, vllm_engine):
    from vllm import SamplingParams

    out, _ = pruned_dir
    llm = vllm_engine(out, max_model_len=128)
    result = llm.generate(["The council met on Tuesday"], SamplingParams(max_tokens=8, temperature=0.0))
    hf = transformers.AutoModelForCausalLM.from_pretrained(out)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    prompt = tok("The council met on Tuesday", return_tensors="pt")
    greedy = hf.generate(**prompt, max_new_tokens=8, do_sample=False, min_new_tokens=8, eos_token_id=None)
    assert list(result[0].outputs[0].token_ids) == greedy[0, prompt.input_ids.shape[1]:].tolist()


def test_perplexity_matches_an_independent_computation(llama_path, tokenizer):
    model = transformers.AutoModelForCausalLM.from_pretrained(llama_path).eval()
    result = perplexity(model, TEXT, seqlen=64, max_windows=5, tokenizer=tokenizer)
    ids = tokenizer(TEXT, return_tensors="pt").input_ids[0]
    with torch.no_grad():
        losses = [model(input_ids=ids[i * 64:(i + 1) * 64][None], labels=ids[i * 64:(i + 1) * 64][None]).loss
                  for i in range(5)]
    assert result["windows"] == 5 and result["seqlen"] == 64
    assert result["perplexity"] == pytest.approx(math.exp(float(torch.stack(losses).mean())), rel=1e-5)
    with pytest.raises(PerplexityError, match="fewer than one window"):
        perplexity(model, "too short", seqlen=64, tokenizer=tokenizer)


def test_cli_prunes_and_measures_perplexity(llama_path, text_file, tmp_path, capsys):
    out = tmp_path / "sgpt"
    code = main(["prune", "--model", str(llama_path), "--method", "sparsegpt", "--sparsity", "0.4",
                 "--calibration", str(text_file), "--nsamples", "2", "--seqlen", "32", "--out", str(out)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["method"] == "sparsegpt" and printed["measured_sparsity"] == pytest.approx(0.4, abs=0.01)
    assert main(["perplexity", "--model", str(out), "--text", str(text_file), "--seqlen", "64",
                 "--max-windows", "2"]) == 0
    measured = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert measured["windows"] == 2 and measured["perplexity"] > 1
    assert main(["prune", "--model", str(llama_path), "--method", "wanda", "--structure", "2:4", "--owl",
                 "--out", str(tmp_path / "x")]) == 2
    assert "cannot be combined with structure '2:4'" in capsys.readouterr().err
