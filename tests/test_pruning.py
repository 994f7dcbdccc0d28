"""The pruning core and its methods on the tiny models: exact sparsity patterns, a
hand-worked Wanda mask, reconstruction-error ordering, OWL allocation, every family's walk,
determinism and bad inputs."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers
from torch import nn

from harness.pruning import OWLSpec, PruneSpec, prune
from harness.pruning.driver import CalibrationInputError, ModelStructureError, find_blocks
from harness.pruning.methods import SparseGPT, Wanda
from harness.pruning.methods.sparsegpt import HessianError
from harness.pruning.owl import allocate
from harness.pruning.spec import SpecError
from harness.tiny_models import CAUSAL_FAMILIES


def random_ids(nsamples=4, seqlen=64, seed=0):
    return torch.randint(8, 1000, (nsamples, seqlen), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def dense_llama(llama_path):
    return transformers.AutoModelForCausalLM.from_pretrained(llama_path).eval()


def block_linears(model):
    prefix, blocks = find_blocks(model)
    return {f"{prefix}.{i}.{n}": m for i, b in enumerate(blocks) for n, m in b.named_modules()
            if isinstance(m, nn.Linear)}


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("structure", ["unstructured", "2:4", "4:8"])
def test_every_matrix_meets_its_spec(dense_llama, method, structure):
    model = copy.deepcopy(dense_llama)
    before = {n: m.weight.detach().clone() for n, m in block_linears(model).items()}
    spec = PruneSpec(method=method, sparsity=0.5, structure=structure)
    report = prune(model, spec, random_ids())
    for name, layer in block_linears(model).items():
        w, w0 = layer.weight.detach(), before[name]
        rows, cols = w.shape
        zeros = w == 0
        if spec.nm:
            n, m = spec.nm
            assert ((zeros.reshape(rows, cols // m, m).sum(-1)) >= n).all(), name
        elif method == "wanda":
            assert (zeros.sum(1) == int(cols * 0.5)).all(), name
        elif method == "magnitude":
            # one threshold per matrix: the (int(numel*s)+1)-th smallest |w|, ties included
            threshold = torch.kthvalue(w0.abs().flatten(), int(w0.numel() * 0.5) + 1).values
            assert zeros.sum() == (w0.abs() <= threshold).sum(), name
            assert torch.equal(w[~zeros], w0[~zeros]), "magnitude must not change kept weights"
        else:  # sparsegpt: int(numel*s)+1 per block of 128 columns (a tie may add one)
            for start in range(0, cols, 128):
                k = int(rows * min(128, cols - start) * 0.5) + 1
                assert abs(int(zeros[:, start:start + 128].sum()) - k) <= 1, name
        assert report["modules"][name] == pytest.approx(float(zeros.float().mean()))
    assert report["nm_valid"] is (True if spec.nm else None)
    assert report["measured_sparsity"] == pytest.approx(0.5, abs=2e-3)


def test_magnitude_row_scope_zeroes_the_same_count_per_row(dense_llama):
    model = copy.deepcopy(dense_llama)
    prune(model, PruneSpec(method="magnitude", sparsity=0.3, magnitude_scope="row"), None)
    for layer in block_linears(model).values():
        w = layer.weight.detach()
        assert ((w == 0).sum(1) == int(w.shape[1] * 0.3)).all()


def test_wanda_mask_on_a_hand_worked_example():
    layer = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.5, 3.0, 4.0], [1.0, 3.0, 2.5, 2.0]]))
    # Two tokens; per-channel L2 norms are 2, 1, 0.5, 0.25. Scores |W| * norm:
    #   row 0: [2.0, 2.5, 1.5, 1.0]   row 1: [2.0, 3.0, 1.25, 0.5]
    x = torch.tensor([[[2.0, 1.0, 0.0, 0.25], [0.0, 0.0, 0.5, 0.0]]])
    unstructured = Wanda(layer, PruneSpec(method="wanda", sparsity=0.5))
    unstructured.add_batch(x)
    unstructured.add_batch(x)  # a second identical sample leaves the ranking unchanged
    saved = layer.weight.detach().clone()
    unstructured.prune(0.5)
    assert layer.weight.detach().tolist() == [[1.0, 2.5, 0.0, 0.0], [1.0, 3.0, 0.0, 0.0]]
    # 1:2 keeps the higher score of each pair: row 0 (2.0|2.5) (1.5|1.0); row 1 (2.0|3.0) (1.25|0.5)
    with torch.no_grad():
        layer.weight.copy_(saved)
    one_of_two = Wanda(layer, PruneSpec(method="wanda", structure="1:2"))
    one_of_two.add_batch(x)
    one_of_two.prune(0.5)
    assert layer.weight.detach().tolist() == [[0.0, 2.5, 3.0, 0.0], [0.0, 3.0, 2.5, 0.0]]
    # magnitude prunes differently: the smallest |W| per row would be columns 0 and 1 / 0 and 3


def _block0_inputs(model, ids):
    """Dense inputs of every Linear of block 0, captured with hooks (independent of the core)."""
    inputs, handles = {}, []
    _, blocks = find_blocks(model)
    for name, layer in blocks[0].named_modules():
        if isinstance(layer, nn.Linear):
            handles.append(layer.register_forward_hook(
                lambda _m, args, _o, name=name: inputs.setdefault(name, []).append(args[0].reshape(-1, args[0].shape[-1]))))
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)
    for h in handles:
        h.remove()
    return {name: torch.cat(xs) for name, xs in inputs.items()}


@pytest.mark.parametrize("structure", ["unstructured", "2:4"])
def test_reconstruction_error_sparsegpt_below_wanda_below_magnitude(dense_llama, structure):
    ids = random_ids(nsamples=8)
    inputs = _block0_inputs(dense_llama, ids)
    dense = {n: m.weight.detach() for n, m in find_blocks(dense_llama)[1][0].named_modules() if isinstance(m, nn.Linear)}
    errors = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        model = copy.deepcopy(dense_llama)
        prune(model, PruneSpec(method=method, sparsity=0.5, structure=structure), ids)
        pruned = {n: m.weight.detach() for n, m in find_blocks(model)[1][0].named_modules() if isinstance(m, nn.Linear)}
        # Block 0's Linears all see the same dense calibration inputs whatever the method.
        errors[method] = sum(float(torch.linalg.norm(inputs[n] @ (dense[n] - pruned[n]).T)) for n in dense)
    assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"], errors


@pytest.mark.parametrize("family", CAUSAL_FAMILIES)
def test_every_family_walks_and_prunes_only_block_linears(tiny, family):
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny(family)).eval()
    outside = {n: p.detach().clone() for n, p in model.named_parameters() if ".layers." not in n and ".h." not in n}
    expected = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)} - {"lm_head", "embed_out"}
    ids = random_ids(nsamples=2, seqlen=32)
    dense_logits = model(input_ids=ids).logits
    report = prune(model, PruneSpec(method="sparsegpt", structure="2:4"), ids)
    assert set(report["modules"]) == expected
    assert report["nm_valid"] is True and len(report["blocks"]) == model.config.num_hidden_layers
    for name, p in model.named_parameters():
        if name in outside:
            assert torch.equal(p, outside[name]), f"{name} must not be pruned"
    logits = model(input_ids=ids).logits
    assert torch.isfinite(logits).all() and not torch.allclose(logits, dense_logits)


def test_pruning_is_deterministic_with_or_without_offloading(dense_llama):
    results = []
    for offload in (False, False, True):
        model = copy.deepcopy(dense_llama)
        prune(model, PruneSpec(method="sparsegpt", sparsity=0.6), random_ids(seed=3), offload=offload)
        results.append(model.state_dict())
    for other in results[1:]:
        assert all(torch.equal(results[0][k], other[k]) for k in results[0])


def test_sparsegpt_retries_cholesky_with_more_damping_and_says_so():
    layer = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0]]))
    pruner = SparseGPT(layer, PruneSpec(method="sparsegpt", sparsity=0.5))
    # Not positive definite: mean(diag) = 0.25, so damping needs 10 x mean(diag) (3 retries).
    pruner.hessian, pruner.nsamples = torch.tensor([[1.0, 0.0], [0.0, -0.5]]), 1
    note = pruner.prune(0.5)
    assert note == {"percdamp_requested": 0.01, "percdamp_used": pytest.approx(10.0), "retries": 3}
    failing = SparseGPT(layer, PruneSpec(method="sparsegpt", sparsity=0.5))
    failing.hessian, failing.nsamples = torch.tensor([[1.0, 0.0], [0.0, -1e9]]), 1
    with pytest.raises(HessianError, match="not positive definite even with damping"):
        failing.prune(0.5)


def test_owl_allocation_keeps_the_mean_and_lowers_sparsity_where_outliers_are(dense_llama):
    model = copy.deepcopy(dense_llama)
    report = prune(model, PruneSpec(method="wanda", sparsity=0.5, owl=OWLSpec(M=5, lam=0.08)), random_ids())
    ratios, targets = report["owl"]["outlier_ratios"], report["owl"]["block_sparsity"]
    _, blocks = find_blocks(model)
    params = [sum(m.weight.numel() for m in b.modules() if isinstance(m, nn.Linear)) for b in blocks]
    mean = sum(t * p for t, p in zip(targets, params)) / sum(params)
    assert mean == pytest.approx(0.5, abs=1e-3)
    assert all(abs(t - 0.5) <= 0.08 + 1e-9 for t in targets)
    assert (targets[0] < targets[1]) == (ratios[0] > ratios[1])
    for measured, target in zip(report["blocks"], targets):  # Wanda floors per row of 128 or 256 columns
        assert target - 1 / 128 <= measured <= target


def test_owl_allocation_on_unequal_blocks():
    targets = allocate([0.01, 0.05, 0.02, 0.03], [100, 300, 100, 500], 0.6, OWLSpec(lam=0.1))
    assert sum(t * p for t, p in zip(targets, [100, 300, 100, 500])) / 1000 == pytest.approx(0.6, abs=1e-9)
    assert max(targets) <= 0.7 + 1e-12 and min(targets) >= 0.5 - 1e-12
    assert sorted(range(4), key=lambda i: targets[i]) == [1, 3, 2, 0]  # more outliers, less pruning
    with pytest.raises(SpecError, match=r"owl: per-block sparsities 0.05 \+/- owl.lam 0.08 must stay in \[0, 1\)"):
        PruneSpec(method="magnitude", sparsity=0.05, owl=OWLSpec(lam=0.08))


def test_owl_is_refused_with_nm():
    with pytest.raises(SpecError, match="cannot be combined with structure '2:4'"):
        PruneSpec(method="wanda", structure="2:4", owl=OWLSpec())


@pytest.mark.parametrize("sparsity", [1.0, -0.1, 1.5])
def test_sparsity_outside_unit_interval_is_refused(sparsity):
    with pytest.raises(SpecError, match=r"sparsity must be in \[0, 1\)"):
        PruneSpec(method="wanda", sparsity=sparsity)


def test_model_without_decoder_blocks_is_refused():
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8), nn.Linear(8, 10))
    with pytest.raises(ModelStructureError, match="no decoder blocks found in Sequential"):
        prune(model, PruneSpec(method="magnitude"), None)


def test_input_dim_not_divisible_by_m_is_refused(dense_llama):
    model = copy.deepcopy(dense_llama)
    with pytest.raises(ModelStructureError, match=r"model\.layers\.0\.self_attn\.q_proj: input dimension 128 is not divisible by M=7"):
        prune(model, PruneSpec(method="wanda", structure="3:7"), random_ids())
    assert torch.equal(model.model.layers[0].self_attn.q_proj.weight, dense_llama.model.layers[0].self_attn.q_proj.weight)


@pytest.mark.parametrize("ids, match", [
    (torch.zeros(4, dtype=torch.int64), r"shape \[nsamples, seqlen\]"),
    (torch.full((2, 8), 5000), r"must lie in \[0, 1024\)"),
])
def test_bad_calibration_ids_are_refused(dense_llama, ids, match):
    with pytest.raises(CalibrationInputError, match=match):
        prune(copy.deepcopy(dense_llama), PruneSpec(method="wanda"), ids)


def test_pruning_imports_with_torch_and_transformers_alone():
    import subprocess
    import sys

    code = ("import sys, harness.pruning as p; p.prune, p.prune_checkpoint; "
            "import harness.pruning.calibration, harness.pruning.perplexity; "
            "print(sorted(m for m in ('pydantic', 'pandas', 'tasks', 'vllm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.gpu
def test_cuda_bf16_pruning_agrees_with_the_cpu_run(llama_path):
    """The same bf16 checkpoint pruned block by block on CUDA and on the CPU (fp32 statistics
    on both): magnitude/Wanda masks agree on >= 99.9% of positions, SparseGPT's block-0 output
    error within 2%."""
    ids = random_ids(nsamples=8)
    dense = transformers.AutoModelForCausalLM.from_pretrained(llama_path, dtype=torch.bfloat16).eval()
    inputs = {n: x.float() for n, x in _block0_inputs(dense, ids).items()}
    for method in ("magnitude", "wanda", "sparsegpt"):
        runs = {}
        for device in ("cpu", "cuda"):
            model = copy.deepcopy(dense)
            prune(model, PruneSpec(method=method, sparsity=0.5), ids, device=device)
            runs[device] = {n: m.weight.detach().float().cpu() for n, m in block_linears(model).items()}
            assert next(find_blocks(model)[1].parameters()).device.type == "cpu", "blocks go back where they were"
        if method == "sparsegpt":
            ref = {n: m.weight.detach().float() for n, m in find_blocks(dense)[1][0].named_modules() if isinstance(m, nn.Linear)}
            err = {d: sum(float(torch.linalg.norm(inputs[n] @ (ref[n] - w[f"model.layers.0.{n}"]).T)) for n in ref)
                   for d, w in runs.items()}
            assert err["cuda"] == pytest.approx(err["cpu"], rel=0.02), err
        else:
            same = sum(int(((runs["cpu"][n] == 0) == (runs["cuda"][n] == 0)).sum()) for n in runs["cpu"])
            total = sum(w.numel() for w in runs["cpu"].values())
            assert same / total >= 0.999, (method, same / total)


def test_masks_follow_the_reference_tie_rules():
    from harness.pruning.masks import nm_mask, row_mask, threshold_mask

    scores = torch.randint(0, 4, (5, 12), generator=torch.Generator().manual_seed(2)).float()  # many ties
    for sparsity in (0.25, 0.5, 0.9):
        k = int(12 * sparsity)
        expected = torch.zeros_like(scores, dtype=torch.bool)
        for r, row in enumerate(scores.tolist()):  # stable sort: (score, column)
            for c in sorted(range(12), key=lambda c: (row[c], c))[:k]:
                expected[r, c] = True
        assert torch.equal(row_mask(scores, sparsity), expected)
        kth = sorted(scores.flatten().tolist())[int(60 * sparsity)]
        assert torch.equal(threshold_mask(scores, sparsity), scores <= kth)
    mask = nm_mask(scores, 2, 4)
    for r in range(5):
        for g in range(3):
            group, chosen = scores[r, 4 * g:4 * g + 4], mask[r, 4 * g:4 * g + 4]
            assert int(chosen.sum()) == 2 and group[chosen].max() <= group[~chosen].min()
    assert not threshold_mask(scores, 0.0).any() and not row_mask(scores, 0.0).any()


def test_sparsegpt_without_calibration_input_is_refused():
    layer = torch.nn.Linear(8, 4)
    with pytest.raises(HessianError, match="none reached this layer"):
        SparseGPT(layer, PruneSpec(method="sparsegpt")).prune(0.5)
