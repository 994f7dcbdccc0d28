"""Structured pruning: unit masks, smaller checkpoints (HF and vLLM), parameter counts, Bonsai,
and the baselines. Reference values come from forward hooks written here (not from the
pruning code's unit map), hand computations and independent formulas."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from harness.cli.main import main
from harness.pruning import CalibrationSpec, PruneSpec, prune_checkpoint
from harness.pruning.spec import SpecError
from harness.pruning.structured.bonsai import bonsai
from harness.pruning.structured.spec import StructuredSpec, StructuredSpecError, TargetShape
from harness.pruning.structured.units import UnitMask, apply_unit_mask, parameter_counts, unit_layout

FAMILIES = ("llama", "mistral", "qwen2", "opt", "gpt_neox", "falcon")
# Written out here, independently of harness.pruning.structured.units: per family, the block
# list, the Linear reading the FFN channels, and (Llama-like) the one reading attention heads.
BLOCKS = {"llama": "model.layers", "mistral": "model.layers", "qwen2": "model.layers",
          "opt": "model.decoder.layers", "gpt_neox": "gpt_neox.layers", "falcon": "transformer.h"}
FFN_OUT = {"llama": "mlp.down_proj", "mistral": "mlp.down_proj", "qwen2": "mlp.down_proj", "opt": "fc2",
           "gpt_neox": "mlp.dense_4h_to_h", "falcon": "mlp.dense_4h_to_h"}
FFN_SIZE = {"llama": "intermediate_size", "mistral": "intermediate_size", "qwen2": "intermediate_size",
            "opt": "ffn_dim", "gpt_neox": "intermediate_size", "falcon": "ffn_hidden_size"}
IDS = torch.tensor([[0, 37, 512, 99, 4, 250, 801, 13, 77, 640, 3, 128, 900, 45, 21, 600]])
CALIBRATION = CalibrationSpec(nsamples=4, seqlen=32)


def load(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def hooked_logits(model, family: str, kept_ffn, kept_heads=None, kept_blocks=None, ids=IDS):
    """Logits of ``model`` with the removed units' outputs zeroed by hooks: FFN channels and
    query heads zeroed at the input of the Linear that reads them, a removed block replaced by
    its input. ``kept_heads`` lists kept query heads per block."""
    blocks = model.get_submodule(BLOCKS[family])
    head_dim = getattr(model.config, "head_dim", None)
    handles = []

    def zero_except(kept, width):
        def hook(_module, args):
            keep = torch.zeros(args[0].shape[-1])
            for unit in kept:
                keep[unit * width:(unit + 1) * width] = 1
            return (args[0] * keep,)
        return hook

    def skip(_module, args, kwargs, output):
        x = args[0] if args else kwargs["hidden_states"]
        return (x, *output[1:]) if isinstance(output, tuple) else x

    for index, block in enumerate(blocks):
        handles.append(block.get_submodule(FFN_OUT[family]).register_forward_pre_hook(zero_except(kept_ffn[index], 1)))
        if kept_heads is not None:
            o_proj = block.get_submodule("self_attn.o_proj")
            handles.append(o_proj.register_forward_pre_hook(zero_except(kept_heads[index], head_dim)))
        if kept_blocks is not None and not kept_blocks[index]:
            handles.append(block.register_forward_hook(skip, with_kwargs=True))
    try:
        with torch.no_grad():
            return model(input_ids=ids).logits
    finally:
        for h in handles:
            h.remove()


def query_heads(model, kept_groups):
    """Query heads of the kept KV groups (group g holds heads g*r .. g*r + r - 1)."""
    r = model.config.num_attention_heads // model.config.num_key_value_heads
    return [[g * r + i for g in groups for i in range(r)] for groups in kept_groups]


@pytest.mark.parametrize("family", FAMILIES)
def test_keep_everything_mask_reproduces_dense_logits_exactly(tiny, family):
    model = load(tiny(family))
    with torch.no_grad():
        dense = model(input_ids=IDS).logits
        same = apply_unit_mask(model, UnitMask.full(unit_layout(model)))(input_ids=IDS).logits
    assert torch.equal(same, dense)


@pytest.mark.parametrize("family", FAMILIES)
def test_uniform_mask_gives_a_standard_smaller_checkpoint_equal_to_hooked_original(tiny, tmp_path, family):
    """Kept FFN channels, KV groups (Llama-like) and blocks: a standard config that loads with
    AutoModelForCausalLM, whose logits equal the original's with the removed units hooked away."""
    model = load(tiny(family))
    layout = unit_layout(model)
    generator = torch.Generator().manual_seed(1)
    ffn_size = getattr(model.config, FFN_SIZE[family])
    kept_ffn = [sorted(torch.randperm(ffn_size, generator=generator)[:100].tolist()) for _ in range(2)]
    groups = [[1], [0]] if layout.attn_units else [[], []]
    mask = UnitMask(tuple(map(tuple, groups)), tuple(map(tuple, kept_ffn)), (True, True))
    smaller = apply_unit_mask(model, mask)
    smaller.save_pretrained(tmp_path)
    loaded = load(tmp_path)
    assert getattr(loaded.config, FFN_SIZE[family]) == 100
    heads = query_heads(model, groups) if layout.attn_units else None
    if heads:
        assert (loaded.config.num_key_value_heads, loaded.config.num_attention_heads) == (1, 2)
    with torch.no_grad():
        got = loaded(input_ids=IDS).logits
    torch.testing.assert_close(got, hooked_logits(model, family, kept_ffn, heads), rtol=1e-5, atol=1e-5)
    dropped_block = UnitMask(mask.attn, mask.ffn, (False, True))
    fewer = apply_unit_mask(model, dropped_block)
    assert fewer.config.num_hidden_layers == 1
    with torch.no_grad():
        got = fewer(input_ids=IDS).logits
    want = hooked_logits(model, family, kept_ffn, heads, kept_blocks=[False, True])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def three_block_llama(tiny, tmp_path_factory):
    """The tiny Llama's shape with three blocks (so one can go), random weights, its tokenizer."""
    source = tiny("llama")
    config = transformers.AutoConfig.from_pretrained(source)
    config.num_hidden_layers = 3
    torch.manual_seed(3)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    folder = tmp_path_factory.mktemp("llama3")
    model.save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


@pytest.mark.vllm
def test_pruned_uniform_checkpoint_loads_in_hf_and_vllm_with_hooked_logits(three_block_llama, tmp_path, vllm_engine):
    from vllm import SamplingParams

    spec = PruneSpec("unit-norm", calibration=CALIBRATION,
                     structured=StructuredSpec(target_shape=TargetShape(attn_units=1, ffn_units=96)))
    out = tmp_path / spec.key
    report = prune_checkpoint(three_block_llama, spec, out, device="cpu")
    assert report["shape"] == "uniform" and json.loads((out / "sparsity.json").read_text())["shape"] == "uniform"
    config = json.loads((out / "config.json").read_text())
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["intermediate_size"]) == (2, 1, 96)
    original, pruned = load(three_block_llama), load(out)
    recorded = report["unit_mask"]
    want = hooked_logits(original, "llama", recorded["ffn"], query_heads(original, recorded["attn"]))
    with torch.no_grad():
        torch.testing.assert_close(pruned(input_ids=IDS).logits, want, rtol=1e-5, atol=1e-5)
    prompt = IDS[0].tolist()
    (result,) = vllm_engine(out).generate([{"prompt_token_ids": prompt}],
                                         SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0))
    by_vllm = [entry[token].logprob for entry, token in zip(result.prompt_logprobs[1:], prompt[1:])]
    by_hooks = torch.log_softmax(want[0, :-1].double(), -1).gather(1, IDS[0, 1:, None]).squeeze(1)
    assert by_vllm == pytest.approx(by_hooks.tolist(), abs=1e-4)


def test_block_influence_drops_the_block_most_like_its_input(three_block_llama, tmp_path):
    """ShortGPT's score recomputed here with hooks; the CLI's checkpoint has two blocks and
    equals the original with the dropped block replaced by its input."""
    out = tmp_path / "bi"
    assert main(["prune", "--model", str(three_block_llama), "--method", "block-influence", "--sparsity", "0.34",
                 "--nsamples", "4", "--seqlen", "32", "--device", "cpu", "--out", str(out)]) == 0
    report = json.loads((out / "sparsity.json").read_text())
    original = load(three_block_llama)
    from harness.pruning.calibration import load_calibration

    ids, _ = load_calibration(CALIBRATION, transformers.AutoTokenizer.from_pretrained(three_block_llama))
    cosines = {}

    def record(index):
        def hook(_module, args, kwargs, output):
            x = args[0] if args else kwargs["hidden_states"]
            out = output[0] if isinstance(output, tuple) else output
            cosines[index] = torch.nn.functional.cosine_similarity(x, out, dim=-1).mean().item()
        return hook

    handles = [b.register_forward_hook(record(i), with_kwargs=True) for i, b in enumerate(original.model.layers)]
    with torch.no_grad():
        original(input_ids=ids)
    for h in handles:
        h.remove()
    influence = [1 - cosines[i] for i in range(3)]
    assert report["cost"]["block_influence"] == pytest.approx(influence, abs=1e-5)
    weakest = min(range(3), key=influence.__getitem__)
    assert [c["kept"] for c in report["kept_units"]] == [i != weakest for i in range(3)]
    pruned = load(out)
    assert pruned.config.num_hidden_layers == 2
    kept = [list(range(256))] * 3
    blocks = [i != weakest for i in range(3)]
    with torch.no_grad():
        torch.testing.assert_close(pruned(input_ids=IDS).logits,
                                   hooked_logits(original, "llama", kept, None, blocks), rtol=1e-5, atol=1e-5)


def test_parameter_counts_equal_a_hand_computation(tiny):
    """Tiny Llama: hidden 128, 4 query heads and 2 KV heads of 32, FFN 256 (SwiGLU, no biases)."""
    model = load(tiny("llama"))
    layout = unit_layout(model)
    hidden, head, ffn = 128, 32, 256
    group = 2 * head * hidden + head * hidden + head * hidden + hidden * 2 * head  # q, k, v rows; o columns
    channel = 3 * hidden  # gate and up rows, down column
    block = 4 * head * hidden * 2 + 2 * head * hidden * 2 + 3 * ffn * hidden + 2 * hidden  # q,o + k,v + mlp + norms
    assert (layout.attn_unit_params, layout.ffn_unit_params, layout.block_params) == (group, channel, block)
    mask = UnitMask(attn=((0,), ()), ffn=(tuple(range(100)), ()), blocks=(True, False))
    counts = parameter_counts(layout, mask)
    kept = 1 * group + 100 * channel + 2 * hidden
    assert counts["prunable_before"] == 2 * block and counts["prunable_after"] == kept
    assert counts["pruned_share"] == pytest.approx(1 - kept / (2 * block))
    smaller = apply_unit_mask(model, mask)
    total = sum(p.numel() for p in smaller.parameters())
    assert counts["total_after"] == total == sum(p.numel() for p in model.parameters()) - (2 * block - kept)
    qwen = unit_layout(load(tiny("qwen2")))  # q, k, v biases belong to their KV group
    assert qwen.attn_unit_params == group + 2 * head + head + head


def test_bonsai_is_deterministic_for_a_seed(tiny):
    model = load(tiny("llama"))
    layout = unit_layout(model)
    ids = torch.randint(8, 1000, (2, 16), generator=torch.Generator().manual_seed(0))
    settings = StructuredSpec(prior="wanda", prune_frac=0.25, samples=4, seed=5)
    runs = [bonsai(model, layout, ids, settings, keep={"attn": 1, "ffn": 160}) for _ in range(2)]
    (mask_a, trace_a), (mask_b, trace_b) = runs
    assert mask_a == mask_b and trace_a == trace_b
    assert trace_a.rounds == 2 and trace_a.submodels == 8
    assert trace_a.forward_passes == trace_a.submodels + trace_a.rounds  # one prior pass per round
    assert [len(f) for f in mask_a.ffn] == [160, 160] and [len(a) for a in mask_a.attn] == [1, 1]


def useless_unit_model():
    """A 2-block Llama whose FFN channels each map one token to its successor (next token =
    a fixed cycle), plus 4 useless channels per block (zero output column) with the largest
    input weights. Token embeddings are orthonormal, so every channel acts alone."""
    vocab, hidden, ffn, useless = 16, 64, 12, [1, 5, 6, 10]
    generator = torch.Generator().manual_seed(0)
    embed = torch.linalg.qr(torch.randn(hidden, hidden, generator=generator))[0][:vocab]
    successor = torch.cat([torch.roll(torch.arange(8), -1), 8 + torch.roll(torch.arange(8), -1)])
    config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=hidden, num_attention_heads=2,
                                      num_key_value_heads=2, head_dim=32, intermediate_size=ffn,
                                      num_hidden_layers=2, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(config).eval()
    useful = [j for j in range(ffn) if j not in useless]
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(embed)
        model.lm_head.weight.copy_(4 * embed)
        for index, layer in enumerate(model.model.layers):
            layer.self_attn.o_proj.weight.zero_()
            mlp = layer.mlp
            for w in (mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight):
                w.zero_()
            for channel, token in zip(useful, range(8 * index, 8 * index + 8)):  # block b serves tokens 8b..8b+7
                mlp.gate_proj.weight[channel] = embed[token] / 4
                mlp.up_proj.weight[channel] = embed[token] / 4
                mlp.down_proj.weight[:, channel] = embed[successor[token]]
            for channel in useless:
                for w in (mlp.gate_proj.weight, mlp.up_proj.weight):
                    w[channel] = torch.randn(hidden, generator=generator)
                    w[channel] *= 2 / w[channel].norm()
    starts = torch.tensor([0, 3, 5, 6, 8, 11, 13, 14])  # half the sequences in each cycle
    steps = [starts]
    for _ in range(31):
        steps.append(successor[steps[-1]])
    return model, torch.stack(steps, 1), useless


def test_bonsai_with_a_uniform_prior_removes_useless_units_first():
    model, ids, useless = useless_unit_model()
    for layer in model.model.layers:  # the useless channels have the largest input weights
        norms = layer.mlp.gate_proj.weight.norm(dim=1) + layer.mlp.up_proj.weight.norm(dim=1)
        assert sorted(norms.topk(len(useless)).indices.tolist()) == useless
    settings = StructuredSpec(units=("ffn",), prior="uniform", prune_frac=0.3, samples=48,
                              target_shape=TargetShape(ffn_units=8))
    mask, trace = bonsai(model, unit_layout(model), ids, settings, keep={"attn": 2, "ffn": 8})
    assert trace.rounds == 1 and trace.forward_passes == 48  # a uniform prior needs no pass
    assert [sorted(set(range(12)) - set(kept)) for kept in mask.ffn] == [useless, useless]


def test_global_allocation_gives_a_masked_checkpoint_with_per_block_counts(tiny, tmp_path):
    spec = PruneSpec("unit-norm", sparsity=0.4, calibration=CALIBRATION,
                     structured=StructuredSpec(units=("ffn",), allocation="global"))
    assert spec.key == "unit-norm-global-0.4"
    out = tmp_path / spec.key
    report = prune_checkpoint(tiny("llama"), spec, out, device="cpu")
    counts = [c["ffn"] for c in report["kept_units"]]
    assert report["shape"] == "masked" and counts[0] != counts[1]
    assert report["parameters"]["pruned_share"] == pytest.approx(0.4, abs=0.01)
    original = load(tiny("llama"))
    pruned = load(out)
    assert pruned.config.to_dict()["intermediate_size"] == 256  # original shapes, zeros in place
    down = pruned.model.layers[0].mlp.down_proj.weight
    assert int((down.abs().sum(0) > 0).sum()) == counts[0]
    with torch.no_grad():
        torch.testing.assert_close(pruned(input_ids=IDS).logits,
                                   hooked_logits(original, "llama", report["unit_mask"]["ffn"]), rtol=1e-5, atol=1e-5)


def test_unit_norm_keeps_the_units_with_the_largest_activation_norms(tiny):
    """The activation prior recomputed here: mean |input| of each down_proj column."""
    from harness.pruning.structured.prune import choose_mask

    model = load(tiny("opt"))
    ids = torch.randint(8, 1000, (4, 32), generator=torch.Generator().manual_seed(2))
    sums = {}

    def record(index):
        def hook(_module, args):
            sums[index] = sums.get(index, 0) + args[0].abs().reshape(-1, args[0].shape[-1]).sum(0)
        return hook

    handles = [layer.fc2.register_forward_pre_hook(record(i)) for i, layer in enumerate(model.model.decoder.layers)]
    with torch.no_grad():
        model(input_ids=ids)
    for h in handles:
        h.remove()
    spec = PruneSpec("unit-norm", calibration=CALIBRATION,
                     structured=StructuredSpec(target_shape=TargetShape(ffn_units=64), batch_size=4))
    mask, cost = choose_mask(model, spec, ids)
    assert [sorted(kept) for kept in mask.ffn] == [sorted(sums[i].topk(64).indices.tolist()) for i in range(2)]
    assert cost["forward_passes"] == 1


def test_structured_specs_are_checked_and_keep_old_keys():
    with pytest.raises(StructuredSpecError, match="prior must be one of"):
        StructuredSpec(prior="loud")
    with pytest.raises(SpecError, match="no structure '2:4'"):
        PruneSpec("bonsai", structure="2:4")
    with pytest.raises(SpecError, match="structured settings apply to"):
        PruneSpec("wanda", structured=StructuredSpec())
    with pytest.raises(StructuredSpecError, match="samples must be an even number"):
        StructuredSpec(samples=3)
    assert "structured" not in PruneSpec("wanda").to_dict()  # unstructured cell keys unchanged
    assert PruneSpec("bonsai", sparsity=0.3).key == "bonsai-0.3"
    shaped = PruneSpec("bonsai", structured=StructuredSpec(target_shape=TargetShape(attn_units=1, ffn_units=96)))
    assert shaped.key == "bonsai-shape-a1f96" and shaped.structure == "shape-a1f96"


def test_study_config_takes_structured_specs_and_names_bad_fields(tiny):
    from harness.config import ConfigError, parse_study

    raw = {"name": "s", "models": [{"name": "llama", "path": str(tiny("llama"))}], "tasks": [{"name": "demo"}],
           "prune": [{"method": "bonsai", "sparsity": 0.5, "structured": {"samples": 20, "prior": "wanda"}},
                     {"method": "block-influence", "sparsity": 0.5}]}
    study = parse_study(raw)
    assert [s.key for s in study.prune] == ["bonsai-0.5", "block-influence-0.5"]
    assert study.prune[0].structured.samples == 20
    raw["prune"][0]["structured"]["prior"] = "loud"
    with pytest.raises(ConfigError, match=r"prune\[0\]\.structured.*prior must be one of"):
        parse_study(raw)


def test_target_shape_larger_than_the_model_is_refused(tiny, tmp_path):
    spec = PruneSpec("unit-norm", calibration=CALIBRATION,
                     structured=StructuredSpec(target_shape=TargetShape(ffn_units=999)))
    with pytest.raises(StructuredSpecError, match="ffn_units=999: the model has 256"):
        prune_checkpoint(tiny("llama"), spec, tmp_path / "x", device="cpu")
    assert not (tmp_path / "x").exists()


def test_bench_model_and_cost_table_take_a_structured_checkpoint(tiny, tmp_path):
    import shutil

    from analysis.cost import cost_table
    from harness.efficiency.bench import bench_model
    from harness.models import weight_shapes

    from harness.store import RunStore

    store = RunStore(tmp_path)
    shutil.copytree(tiny("llama"), store.checkpoint_dir("llama", "dense"))
    spec = PruneSpec("block-influence", calibration=CALIBRATION)
    prune_checkpoint(tiny("llama"), spec, store.checkpoint_dir("llama", spec.key), device="cpu")
    bench = bench_model(tmp_path, max_new_tokens=2)
    entries = {e["checkpoint"]: e for e in bench["checkpoints"]}
    nonzero = {k: sum(int((p != 0).sum()) for p in load(store.checkpoint_dir("llama", k)).parameters())
               for k in ("dense", spec.key)}
    assert entries[spec.key]["nonzero"] == nonzero[spec.key] and entries[spec.key]["structure"] == "structured"
    assert entries[spec.key]["tokens_per_s"] > 0
    (row,) = cost_table(bench).itertuples()
    assert (row.method, row.parameter_ratio) == ("block-influence", pytest.approx(nonzero[spec.key] / nonzero["dense"]))
    dense_shapes = weight_shapes(store.checkpoint_dir("llama", "dense"))
    pruned_shapes = weight_shapes(store.checkpoint_dir("llama", spec.key))
    assert len(pruned_shapes) < len(dense_shapes)  # an in-place weight swap must start a new engine


def test_a_study_runs_structured_systems_like_any_other(tmp_path, llama_path, bart_path, nli_path):
    from analysis.load import load_run
    from analysis.risk import risk_table
    from analysis.tables import sparsity_table
    from harness.config import parse_study
    from harness.runner.study import run_study
    from harness.store import RunStore
    from tests.test_runner import study_dict

    prune = [{"method": "block-influence", "sparsity": 0.5},
             {"method": "unit-norm", "structured": {"target_shape": {"attn_units": 1, "ffn_units": 64}}}]
    raw = study_dict(tmp_path / "run", llama_path, bart_path, nli_path, prune=prune, docs=2)
    result = run_study(parse_study(raw), show_progress=False)
    assert not result.failed
    run = load_run(tmp_path / "run")
    systems = {c.prune.label for c in run.cells.values()}
    assert systems == {"dense", "block-influence-0.5", "unit-norm-shape-a1f64"}
    table, _ = sparsity_table(run)
    measured = dict(zip(table["system"], table["measured"]))
    assert measured["block-influence-0.5"] == pytest.approx(0.5)
    risk = risk_table(run, "mean_risk", 0.5, 200, 0)
    assert {"block-influence", "unit-norm"} <= set(risk["method"])
    folder = next(c.folder for c in run.cells.values() if c.prune.label == "unit-norm-shape-a1f64")
    assert RunStore(tmp_path / "run").checkpoint_report_path("tiny", folder, "perplexity.json").exists()
