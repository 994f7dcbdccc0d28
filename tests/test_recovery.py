"""Recovery fine-tuning: full keeps every pruned zero, LoRA leaves the base byte-identical,
a killed recovery resumes to the same weights, bad input is named."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.cli.main import main as cli
from harness.hashing import hash_file
from harness.pruning import CalibrationSpec, PruneSpec, prune_checkpoint
from harness.pruning.spec import SpecError
from harness.recovery import LoRASpec, RecoverySpec, recover

REPO = Path(__file__).resolve().parents[1]
DATA = CalibrationSpec(source="task:demo", nsamples=8, seqlen=64, seed=0)
BLOCK_LINEAR = (".self_attn.", ".mlp.")  # the tiny Llama's decoder-block Linears


@pytest.fixture(scope="module")
def pruned(tmp_path_factory, llama_path):
    """Magnitude-pruned tiny Llamas, 50% unstructured and 2:4."""
    root = tmp_path_factory.mktemp("pruned")
    out = {}
    for name, spec in (("0.5", PruneSpec("magnitude", sparsity=0.5)), ("2:4", PruneSpec("magnitude", structure="2:4"))):
        out[name] = root / name.replace(":", "of")
        prune_checkpoint(llama_path, spec, out[name])
    return out


def block_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The decoder-block Linear weights of a saved checkpoint, read from its safetensors."""
    tensors = load_file(directory / "model.safetensors")
    return {k: v for k, v in tensors.items() if k.endswith(".weight") and any(s in k for s in BLOCK_LINEAR)}


@pytest.mark.parametrize("amount", ["0.5", "2:4"])
def test_full_fine_tuning_keeps_every_pruned_zero_and_lowers_the_loss(pruned, tmp_path, amount):
    before = block_weights(pruned[amount])
    spec = RecoverySpec("full", steps=6, lr=2e-3, batch_size=2, data=DATA, weight_decay=0.1)
    report = recover(pruned[amount], spec, tmp_path / "full", progress=False)
    after = block_weights(tmp_path / "full")

    zeros_before = sum(int((w == 0).sum()) for w in before.values())
    kept = sum(int((after[k][before[k] == 0] == 0).sum()) for k in before)
    assert zeros_before == kept == report["pruned_zeros"]["pruned"]
    half = sum(w.numel() for w in before.values()) // 2  # magnitude's threshold adds 1 per matrix
    assert zeros_before == half + (len(before) if amount == "0.5" else 0)
    moved = sum(int((after[k] != before[k]).sum()) for k in before)
    assert moved > 0.9 * zeros_before  # the unpruned weights did train
    assert report["loss_after"] < report["loss_before"]
    sparsity = json.loads((tmp_path / "full" / "sparsity.json").read_text())
    assert sparsity["measured_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert sparsity["nm_valid"] is (True if amount == "2:4" else None)
    assert not (tmp_path / ".full.train").exists()  # the resumable state is gone once done


def test_lora_keeps_the_base_byte_identical_and_its_adapter_changes_the_output(pruned, tmp_path, capsys):
    base = pruned["2:4"]
    hashes = {p.name: hash_file(p) for p in base.iterdir() if p.is_file()}
    code = cli(["recover", "--model", str(base), "--method", "lora", "--data", "task:demo",
                "--nsamples", "8", "--seqlen", "64", "--steps", "6", "--lr", "5e-3", "--batch-size", "2",
                "--rank", "4", "--alpha", "8", "--target-modules", "q_proj,v_proj,down_proj",
                "--out", str(tmp_path / "lora"), "--no-progress"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["loss_after"] < printed["loss_before"]
    assert {p.name: hash_file(p) for p in base.iterdir() if p.is_file()} == hashes

    adapter = load_file(tmp_path / "lora" / "adapter_model.safetensors")
    assert adapter and all("lora_A" in k or "lora_B" in k for k in adapter)
    assert {k.split(".")[-3] for k in adapter} == {"q_proj", "v_proj", "down_proj"}
    assert all(t.shape[0] == 4 or t.shape[1] == 4 for t in adapter.values())

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.arange(5, 45).unsqueeze(0)
    plain = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    with torch.no_grad():
        base_logits = plain(ids).logits
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), tmp_path / "lora").eval()
    with torch.no_grad():
        lora_logits = model(ids).logits
        with model.disable_adapter():
            assert torch.equal(model(ids).logits, base_logits)  # unmerged: the base is intact
    assert (lora_logits - base_logits).abs().max() > 1e-3
    served = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
              for k, v in model.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(served[k], w) for k, w in block_weights(base).items())


CHILD = """
import sys, time
from harness.pruning import CalibrationSpec
from harness.recovery import RecoverySpec, recover
spec = RecoverySpec("full", steps=6, lr=2e-3, batch_size=2, save_every=2,
                    data=CalibrationSpec(source="task:demo", nsamples=8, seqlen=64))
def hang(step, loss):
    if step == 3:  # state saved at step 2; step 3 is lost with the process
        print("ready", flush=True)
        time.sleep(600)
recover(sys.argv[1], spec, sys.argv[2], progress=False, on_step=hang)
"""


def test_killed_recovery_resumes_to_the_same_weights(pruned, tmp_path):
    spec = RecoverySpec("full", steps=6, lr=2e-3, batch_size=2, save_every=2, data=DATA)
    recover(pruned["0.5"], spec, tmp_path / "straight", progress=False)

    out = tmp_path / "resumed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(pruned["0.5"]), str(out)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert (tmp_path / ".resumed.train" / "latest").read_text() == "step-00000002"
    assert not out.exists()

    steps = []
    recover(pruned["0.5"], spec, out, progress=False, on_step=lambda step, loss: steps.append(step))
    assert steps == [3, 4, 5, 6]
    straight, resumed = load_file(tmp_path / "straight" / "model.safetensors"), load_file(out / "model.safetensors")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_bad_recovery_input_is_named(pruned, tmp_path, capsys):
    with pytest.raises(SpecError, match="method must be one of lora, full"):
        RecoverySpec("qlora")
    with pytest.raises(SpecError, match="lora.rank must be >= 1"):
        LoRASpec(rank=0)
    code = cli(["recover", "--model", str(pruned["0.5"]), "--method", "full", "--data",
                str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x"), "--no-progress"])
    assert code == 2
    assert "missing.jsonl: calibration file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"body": 3}\n')
    code = cli(["recover", "--model", str(pruned["0.5"]), "--method", "lora", "--data", str(bad),
                "--out", str(tmp_path / "x"), "--no-progress"])
    assert code == 2
    assert "bad.jsonl: line 2: field 'text'" in capsys.readouterr().err


def test_vllm_serves_the_adapter_unmerged_as_transformers_and_peft_do(pruned, tmp_path, vllm_engine, llama_path):
    from harness.config import GenerationConfig
    from harness.generation import generate_cell, meta_path
    from harness.models import model_identity

    base = pruned["2:4"]
    adapter = tmp_path / "lora"
    recover(base, RecoverySpec("lora", steps=4, lr=5e-3, batch_size=2, data=DATA,
                               lora=LoRASpec(rank=4, alpha=8)), adapter, progress=False)
    documents = [("d1", "The council approved a new budget for buses and schools on Tuesday."),
                 ("d2", "Heavy rain flooded several streets and the fire service rescued a family.")]
    identity = model_identity("tiny", base, "base")
    engine = {"max_model_len": 512, "dtype": "float32", "enforce_eager": True}
    ids = {}
    for backend, with_adapter in (("vllm", True), ("hf", True), ("hf", False)):
        config = GenerationConfig(backend=backend, max_new_tokens=12, engine=engine)
        out = tmp_path / f"{backend}-{with_adapter}.jsonl"
        records = generate_cell(base, documents, "A", config, identity, out,
                                adapter=adapter if with_adapter else None)
        ids[backend, with_adapter] = [r.output_token_ids for r in records]
        meta = json.loads(meta_path(out).read_text())
        if with_adapter:
            assert meta["adapter"] == {"folder": "lora", "merged": False,
                                       "served_by": "vllm-lora" if backend == "vllm" else "hf-peft"}
    assert ids["vllm", True] == ids["hf", True]  # greedy fp32: the same tokens
    assert ids["hf", True] != ids["hf", False]  # and the adapter is in them

    # An engine without LoRA (the session's, of the same architecture) refuses the adapter:
    # the cell falls back to peft on the pruned base, and says so.
    config = GenerationConfig(backend="vllm", max_new_tokens=12, engine=engine)
    out = tmp_path / "fallback.jsonl"
    records = generate_cell(base, documents, "A", config, identity, out, adapter=adapter,
                            llm=vllm_engine(llama_path))
    meta = json.loads(meta_path(out).read_text())
    assert meta["adapter"]["served_by"] == "hf-peft" and meta["adapter"]["fallback_reason"]
    assert {r.backend for r in records} == {"hf"}
    assert [r.output_token_ids for r in records] == ids["hf", True]
