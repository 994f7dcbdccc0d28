"""`prunescope prune`: prune one checkpoint (a thin layer over ``harness.pruning.prune_checkpoint``)."""

from harness.pruning.spec import METHODS


def register(sub) -> None:
    p = sub.add_parser("prune", help="prune a checkpoint (magnitude, Wanda, SparseGPT) into a new checkpoint")
    p.add_argument("--model", required=True, help="checkpoint directory of the dense model")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--sparsity", type=float, default=0.5, help="unstructured target (ignored for N:M)")
    p.add_argument("--structure", default="unstructured", help="'unstructured' or N:M such as 2:4, 4:8")
    p.add_argument("--owl", action="store_true", help="outlier-weighted layerwise sparsity (unstructured only)")
    p.add_argument("--owl-m", type=float, default=5.0, help="OWL outlier threshold M (x mean score)")
    p.add_argument("--owl-lambda", type=float, default=0.08, help="OWL per-block spread +/- lambda")
    p.add_argument("--calibration", default="task:demo",
                   help="task:<name>, a text/JSONL file, or token ids (.pt/.npy/.safetensors)")
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="where blocks are processed: auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default=None, help="load dtype (default: the checkpoint's), e.g. bfloat16")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    import torch

    from harness.pruning import CalibrationSpec, OWLSpec, PruneSpec, prune_checkpoint

    spec = PruneSpec(
        method=args.method, sparsity=args.sparsity, structure=args.structure,
        owl=OWLSpec(M=args.owl_m, lam=args.owl_lambda) if args.owl else None,
        calibration=CalibrationSpec(source=args.calibration, nsamples=args.nsamples,
                                    seqlen=args.seqlen, seed=args.seed),
    )
    dtype = getattr(torch, args.dtype) if args.dtype else None
    report = prune_checkpoint(args.model, spec, args.out, device=args.device, dtype=dtype)
    summary = {k: report[k] for k in ("method", "target_sparsity", "measured_sparsity", "nm_valid", "wall_time_s")}
    print(json.dumps({"out": args.out, **summary}))
    return 0
