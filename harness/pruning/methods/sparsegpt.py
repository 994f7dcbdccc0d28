"""SparseGPT (Frantar & Alistarh, 2023): prune with the inverse Hessian of the layer's
reconstruction loss and update the remaining weights to compensate (blocked OBS)."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from harness.errors import PrunescopeError
from harness.pruning.masks import nm_mask, threshold_mask
from harness.pruning.spec import PruneSpec

MAX_DAMPING_RETRIES = 6  # damping grows 10x per retry: 1% of mean(diag H) up to 10^4 %


class HessianError(PrunescopeError):
    """H stayed not positive definite even with much larger damping."""


class SparseGPT:
    needs_calibration = True

    def __init__(self, layer: torch.nn.Linear, spec: PruneSpec):
        self.layer, self.spec = layer, spec
        cols = layer.in_features
        self.hessian = torch.zeros(cols, cols, dtype=torch.float32, device=layer.weight.device)
        self.nsamples = 0

    def add_batch(self, inp: torch.Tensor) -> None:
        # H = (2/n) sum_samples X X^T with n counting samples (not tokens), kept as a running mean.
        batch = inp.shape[0] if inp.ndim == 3 else 1
        x = inp.reshape(-1, inp.shape[-1]).float()
        self.hessian *= self.nsamples / (self.nsamples + batch)
        self.nsamples += batch
        x = x * (2 / self.nsamples) ** 0.5
        with _exact_fp32():
            self.hessian += x.T @ x

    def prune(self, sparsity: float) -> dict | None:
        """Prune in place; returns a note when the Cholesky needed more damping than asked."""
        if self.nsamples == 0:  # every input would count as dead and the whole matrix be zeroed
            raise HessianError("SparseGPT needs calibration inputs; none reached this layer "
                               "(e.g. an MoE expert no calibration token was routed to)")
        weight = self.layer.weight.data
        w = weight.float().clone()
        hessian = self.hessian
        dead = torch.diag(hessian) == 0
        hessian[dead, dead] = 1
        w[:, dead] = 0
        with _exact_fp32():
            hinv, percdamp, attempts = _inverse_cholesky(hessian, self.spec.percdamp)
            _blocked_obs(w, hinv, sparsity, self.spec.nm, _blocksize(self.spec))
        weight.copy_(w.to(weight.dtype))
        self.hessian = None  # the statistics are spent; free them before the next layer
        if attempts == 0:
            return None
        return {"percdamp_requested": self.spec.percdamp, "percdamp_used": percdamp, "retries": attempts}


def _blocksize(spec: PruneSpec) -> int:
    """The column block, rounded to whole N:M groups so no group straddles two blocks."""
    if not spec.nm:
        return spec.blocksize
    m = spec.nm[1]
    return max(m, spec.blocksize - spec.blocksize % m)


def _inverse_cholesky(hessian: torch.Tensor, percdamp: float) -> tuple[torch.Tensor, float, int]:
    """Upper Cholesky factor of (H + damp I)^-1; on failure retry with 10x the damping."""
    diag_mean = torch.mean(torch.diag(hessian))
    eye = torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device)
    for attempt in range(MAX_DAMPING_RETRIES + 1):
        damp = percdamp * 10**attempt
        lower, info = torch.linalg.cholesky_ex(hessian + damp * diag_mean * eye)
        if info == 0:
            upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(lower), upper=True)
            if info == 0 and torch.isfinite(upper).all():
                return upper, damp, attempt
    raise HessianError(
        f"SparseGPT: the layer Hessian is not positive definite even with damping {damp:g} x "
        f"mean(diag H); check the calibration data (too few samples or non-finite activations)"
    )


def _blocked_obs(w: torch.Tensor, hinv: torch.Tensor, sparsity: float, nm, blocksize: int) -> None:
    """Prune ``w`` (rows x cols, fp32) in place, column block by column block, spreading each
    pruned weight's error over the not-yet-visited columns through ``hinv``."""
    cols = w.shape[1]
    for start in range(0, cols, blocksize):
        end = min(start + blocksize, cols)
        w_block = w[:, start:end].clone()
        hinv_block = hinv[start:end, start:end]
        hinv_diag = torch.diag(hinv_block)
        errors = torch.zeros_like(w_block)
        if nm:
            mask = torch.zeros_like(w_block, dtype=torch.bool)
        else:
            mask = threshold_mask(w_block**2 / hinv_diag.unsqueeze(0) ** 2, sparsity)
        for i in range(end - start):
            if nm and i % nm[1] == 0:
                # Chosen on the weights already updated by the columns before this group.
                group = slice(i, i + nm[1])
                scores = w_block[:, group] ** 2 / hinv_diag[group].unsqueeze(0) ** 2
                mask[:, group] = nm_mask(scores, *nm)
            col = w_block[:, i]
            pruned = torch.where(mask[:, i], torch.zeros_like(col), col)
            err = (col - pruned) / hinv_block[i, i]
            w_block[:, i:] -= err.unsqueeze(1) @ hinv_block[i, i:].unsqueeze(0)
            w_block[:, i] = pruned
            errors[:, i] = err
        w[:, start:end] = w_block
        w[:, end:] -= errors @ hinv[start:end, end:]


@contextmanager
def _exact_fp32():
    """Turn TF32 off on CUDA: the statistics and the OBS update need full fp32."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
