"""HardConcrete gates and the l0 structured method (learned masks, Sheared-LLaMA style)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import integrate

from harness.pruning.structured import hardconcrete as hc

DRAWS = 100_000


def concrete_density(x: float, log_alpha: float, beta: float) -> float:
    """Binary Concrete density (Maddison et al., 2017) of s' in (0, 1), written out here."""
    alpha = math.exp(log_alpha)
    num = alpha * beta * x ** (-beta - 1) * (1 - x) ** (-beta - 1)
    return num / (alpha * x ** (-beta) + (1 - x) ** (-beta)) ** 2


@pytest.mark.parametrize("log_alpha, beta, limits", [
    (0.0, 2 / 3, (-0.1, 1.1)), (1.5, 2 / 3, (-0.1, 1.1)), (-1.0, 0.5, (-0.1, 1.1)), (0.5, 0.9, (-0.2, 1.05)),
])
def test_sampler_matches_closed_forms_and_density(log_alpha, beta, limits):
    low, high = limits
    z = hc.sample(torch.full((DRAWS,), log_alpha, dtype=torch.float64), beta, limits,
                  generator=torch.Generator().manual_seed(1))
    la = torch.tensor(log_alpha, dtype=torch.float64)
    p_zero = 1 - float(hc.prob_nonzero(la, beta, limits))
    p_one = float(hc.prob_one(la, beta, limits))

    def density(x):
        return concrete_density(x, log_alpha, beta)

    # P(z = 0) = P(s' <= -l / (r - l)), P(z = 1) = P(s' >= (1 - l) / (r - l)), by integrating the density
    zero_edge, one_edge = -low / (high - low), (1 - low) / (high - low)
    assert integrate.quad(density, 0, zero_edge)[0] == pytest.approx(p_zero, abs=1e-6)
    assert integrate.quad(density, one_edge, 1)[0] == pytest.approx(p_one, abs=1e-6)
    mean = integrate.quad(lambda x: ((x * (high - low) + low)) * density(x), zero_edge, one_edge)[0] + p_one

    def close(empirical, expected):  # within 5 standard errors of a proportion / a mean in [0, 1]
        return abs(empirical - expected) < 5 * math.sqrt(max(expected * (1 - expected), 1e-4) / DRAWS)

    assert close(float((z == 0).double().mean()), p_zero)
    assert close(float((z == 1).double().mean()), p_one)
    assert close(float(z.mean()), mean)
    assert 0.01 < p_zero < 0.99 and 0.01 < p_one < 0.99  # both atoms are really exercised


def test_gate_gradients_and_test_time_gate():
    log_alpha = torch.tensor([-3.0, 0.0, 3.0], requires_grad=True)
    hc.expected_l0(log_alpha).backward()
    assert (log_alpha.grad > 0).all()  # opening a gate raises the expected count
    gate = hc.deterministic_gate(torch.tensor([-10.0, 0.0, 10.0]))
    assert gate.tolist() == pytest.approx([0.0, 0.5, 1.0])  # sigmoid(0) * 1.2 - 0.1 = 0.5


# --- the l0 method -------------------------------------------------------------------------

@pytest.fixture
def one_thread():
    """The test models' matrices are tiny: extra threads only add synchronisation (and on a
    loaded machine, a lot of it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def calibration(llama_path):
    import transformers

    from harness.pruning.calibration import load_calibration
    from harness.pruning.spec import CalibrationSpec

    tokenizer = transformers.AutoTokenizer.from_pretrained(llama_path)
    return load_calibration(CalibrationSpec(source="task:demo", nsamples=8, seqlen=32), tokenizer)[0]


def _four_block_llama(llama_path):
    """The tiny Llama's shape with 4 blocks and 4 KV groups (one head each), seeded weights."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(llama_path)
    config.num_hidden_layers, config.num_key_value_heads = 4, 4
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def test_lagrangian_drives_expected_kept_units_to_the_target(llama_path, calibration, one_thread):
    from harness.pruning.structured.l0 import l0_targets, train_gates
    from harness.pruning.structured.l0_spec import L0Spec
    from harness.pruning.structured.spec import StructuredSpec, TargetShape
    from harness.pruning.structured.units import unit_layout

    model = _four_block_llama(llama_path)
    layout = unit_layout(model)
    settings = StructuredSpec(target_shape=TargetShape(attn_units=2, ffn_units=96, blocks=2), batch_size=2)
    targets = l0_targets(layout, 0.0, settings)
    assert targets == {"attn": 2, "ffn": 96, "blocks": 2}
    totals = {"attn": 4, "ffn": 256, "blocks": 4}
    l0 = L0Spec()  # the defaults
    log_alpha, history = train_gates(model, calibration, targets, totals, ["attn", "ffn", "blocks"], settings, l0,
                                     progress=False)
    assert history[0]["expected_kept"]["ffn"] > 250  # gates start open (log alpha near 5)
    for kind in ("attn", "ffn"):
        per_block = hc.expected_l0(log_alpha[kind], l0.beta, l0.limits)  # [blocks]
        assert (per_block - targets[kind]).abs().max() <= 1, (kind, per_block)
    assert abs(float(hc.expected_l0(log_alpha["blocks"], l0.beta, l0.limits)) - 2) <= 1
    lo, hi = l0.log_alpha_range
    assert all(float(v.min()) >= lo - 1e-6 and float(v.max()) <= hi + 1e-6 for v in log_alpha.values())


def test_seeded_l0_run_is_deterministic_and_folds_gates_into_weights(llama_path, calibration, one_thread):
    import transformers

    from harness.pruning.structured.l0 import l0_mask, train_gates
    from harness.pruning.structured.l0_spec import L0Spec
    from harness.pruning.structured.spec import StructuredSpec
    from harness.pruning.structured.units import apply_unit_mask, unit_layout

    settings, l0 = StructuredSpec(batch_size=2, seed=3), L0Spec(steps=12, lr=0.5, lambda_lr=1.0, warmup=0.5)
    runs = []
    for _ in range(2):
        model = transformers.AutoModelForCausalLM.from_pretrained(llama_path, dtype=torch.float32).eval()
        mask, cost = l0_mask(model, unit_layout(model), calibration, 0.5, settings, l0, progress=False)
        runs.append((mask, cost, {k: v.clone() for k, v in model.state_dict().items()}))
    (mask, cost, weights), (mask2, cost2, weights2) = runs
    assert mask == mask2 and cost == cost2
    assert all(torch.equal(weights[k], weights2[k]) for k in weights)
    # The pruned model equals the dense one with each kept unit's output scaled by its test-time
    # gate and every other unit's output zeroed, by hooks written here.
    dense = transformers.AutoModelForCausalLM.from_pretrained(llama_path, dtype=torch.float32).eval()
    layout = unit_layout(dense)
    targets = {"attn": 1, "ffn": mask.kept_counts()[0]["ffn"], "blocks": 2}
    log_alpha, _ = train_gates(dense, calibration, targets, {"attn": 2, "ffn": 256, "blocks": 2}, ["attn", "ffn"],
                               settings, l0, progress=False)
    pruned = apply_unit_mask(model, mask)
    assert pruned.config.num_key_value_heads == 1 and pruned.config.intermediate_size == targets["ffn"]
    factors = {}
    for kind, rows in (("attn", mask.attn), ("ffn", mask.ffn)):
        keep = torch.zeros_like(log_alpha[kind])
        for block, kept in enumerate(rows):
            keep[block, list(kept)] = 1
        factors[kind] = keep * hc.deterministic_gate(log_alpha[kind], l0.limits)
    assert 0 < float(factors["ffn"][factors["ffn"] > 0].min()) < 1  # some kept gates are really soft
    hooks = []
    for block, layer in enumerate(dense.model.layers):
        for name, kind, width in (("self_attn.o_proj", "attn", 64), ("mlp.down_proj", "ffn", 1)):
            scale = factors[kind][block].repeat_interleave(width)
            hooks.append(layer.get_submodule(name).register_forward_pre_hook(
                lambda _m, args, scale=scale: (args[0] * scale,)))
    with torch.no_grad():
        expected = dense(calibration[:2]).logits
        got = pruned(calibration[:2]).logits
    for h in hooks:
        h.remove()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("field, value, match", [
    ("steps", 0, "l0.steps must be >= 1"), ("lr", 0.0, "l0.lr must be > 0"), ("warmup", 1.5, r"l0.warmup must be in \[0, 1\]"),
    ("beta", -1.0, "l0.beta must be > 0"), ("limits", (0.0, 1.1), r"l0.limits \(l, r\) need l < 0 < 1 < r"),
    ("log_alpha_range", (3.0, -3.0), "l0.log_alpha_range needs low < high"),
])
def test_impossible_l0_settings_are_refused(field, value, match):
    from harness.errors import PrunescopeError
    from harness.pruning.structured.l0_spec import L0Spec

    with pytest.raises(PrunescopeError, match=match):
        L0Spec(**{field: value})


def test_a_target_that_keeps_everything_learns_nothing(llama_path, calibration):
    import transformers

    from harness.pruning.structured.l0 import l0_mask
    from harness.pruning.structured.l0_spec import L0Spec
    from harness.pruning.structured.spec import StructuredSpec
    from harness.pruning.structured.units import UnitMask, unit_layout

    model = transformers.AutoModelForCausalLM.from_pretrained(llama_path, dtype=torch.float32)
    layout = unit_layout(model)
    mask, cost = l0_mask(model, layout, calibration, 0.0, StructuredSpec(), L0Spec(), progress=False)
    assert mask == UnitMask.full(layout) and cost["steps"] == 0


@pytest.mark.vllm
def test_cli_l0_checkpoint_has_the_target_shape_and_loads_in_hf_and_vllm(llama_path, tmp_path, vllm_engine,
                                                                         one_thread):
    import json

    import transformers
    from vllm import SamplingParams

    from harness.cli.main import main

    out = tmp_path / "l0-0.5"
    assert main(["prune", "--model", str(llama_path), "--method", "l0", "--sparsity", "0.5", "--l0-steps", "30",
                 "--nsamples", "8", "--seqlen", "32", "--device", "cpu", "--out", str(out)]) == 0
    # By hand, the tiny Llama's block: 2 KV groups of 24576 parameters, 256 FFN channels of 384,
    # 256 norm gains (147712). Half of it: the attention share rounds to 1 group, then
    # (73856 - 256 - 24576) / 384 = 127.7 -> 128 channels.
    config = json.loads((out / "config.json").read_text())
    assert (config["num_key_value_heads"], config["num_attention_heads"], config["intermediate_size"],
            config["num_hidden_layers"]) == (1, 2, 128, 2)
    report = json.loads((out / "sparsity.json").read_text())
    assert report["method"] == "l0" and report["shape"] == "uniform"
    assert report["measured_sparsity"] == pytest.approx(1 - (256 + 24576 + 128 * 384) / 147712)
    assert report["cost"]["steps"] == 30 and report["cost"]["targets"] == {"attn": 1, "ffn": 128}
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert sum(p.numel() for p in hf.parameters()) == report["parameters"]["total_after"]
    prompt = [0, 37, 512, 99, 4, 250, 801, 13, 77, 640, 3, 128]
    with torch.no_grad():
        logits = hf(input_ids=torch.tensor([prompt])).logits[0, :-1].double()
    by_hf = torch.log_softmax(logits, -1).gather(1, torch.tensor(prompt[1:])[:, None]).squeeze(1)
    (result,) = vllm_engine(out, max_model_len=128).generate(
        [{"prompt_token_ids": prompt}], SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0))
    by_vllm = [entry[token].logprob for entry, token in zip(result.prompt_logprobs[1:], prompt[1:])]
    assert by_vllm == pytest.approx(by_hf.tolist(), abs=1e-4)


def test_study_config_takes_l0_specs_and_names_bad_fields(llama_path):
    from harness.config import ConfigError, parse_study
    from harness.pruning.spec import PruneSpec, SpecError
    from harness.pruning.structured.l0_spec import L0Spec
    from harness.pruning.structured.spec import StructuredSpec

    raw = {"name": "s", "models": [{"name": "llama", "path": str(llama_path)}], "tasks": [{"name": "demo"}],
           "prune": [{"method": "l0", "sparsity": 0.5, "structured": {"l0": {"steps": 50, "warmup": 0.3}}},
                     {"method": "l0", "sparsity": 0.3}]}
    study = parse_study(raw)
    assert [s.key for s in study.prune] == ["l0-0.5", "l0-0.3"]
    assert study.prune[0].structured.l0 == L0Spec(steps=50, warmup=0.3) and study.prune[1].structured.l0 == L0Spec()
    raw["prune"][0]["structured"]["l0"]["steps"] = 0
    with pytest.raises(ConfigError, match=r"prune\[0\]\.structured\.l0.*l0\.steps must be >= 1"):
        parse_study(raw)
    with pytest.raises(SpecError, match="l0 settings apply to method 'l0', not 'bonsai'"):
        PruneSpec("bonsai", structured=StructuredSpec(l0=L0Spec()))
    with pytest.raises(SpecError, match="no allocation 'global'"):
        PruneSpec("l0", structured=StructuredSpec(allocation="global"))
