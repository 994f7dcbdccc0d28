"""`prunescope prune`: prune one checkpoint (a thin layer over ``harness.pruning.prune_checkpoint``).

Defaults come from the spec dataclasses and choices from the method registry."""

from dataclasses import fields

from harness.pruning import registry
from harness.pruning.spec import CalibrationSpec, OWLSpec, PruneSpec


def _defaults(cls) -> dict:
    return {f.name: f.default for f in fields(cls) if not callable(f.default_factory)}


def register(sub) -> None:
    spec, owl, calib = _defaults(PruneSpec), _defaults(OWLSpec), _defaults(CalibrationSpec)
    p = sub.add_parser("prune", help=f"prune a checkpoint ({', '.join(registry.METHODS)}) into a new checkpoint")
    p.add_argument("--model", required=True, help="checkpoint directory of the dense model")
    p.add_argument("--method", required=True, choices=tuple(registry.METHODS))
    p.add_argument("--sparsity", type=float, default=spec["sparsity"], help="unstructured target (ignored for N:M)")
    p.add_argument("--structure", default=spec["structure"], help="'unstructured' or N:M such as 2:4, 4:8")
    p.add_argument("--owl", action="store_true", help="outlier-weighted layerwise sparsity (unstructured only)")
    p.add_argument("--owl-m", type=float, default=owl["M"], help="OWL outlier threshold M (x mean score)")
    p.add_argument("--owl-lambda", type=float, default=owl["lam"], help="OWL per-block spread +/- lambda")
    p.add_argument("--magnitude-scope", default=spec["magnitude_scope"], choices=("matrix", "row"),
                   help="magnitude: one threshold per matrix or per output row")
    p.add_argument("--blocksize", type=int, default=spec["blocksize"], help="SparseGPT block size")
    p.add_argument("--percdamp", type=float, default=spec["percdamp"], help="SparseGPT Hessian damping")
    p.add_argument("--calibration", default=calib["source"],
                   help="task:<name>, a text/JSONL file, or token ids (.pt/.npy/.safetensors)")
    p.add_argument("--nsamples", type=int, default=calib["nsamples"])
    p.add_argument("--seqlen", type=int, default=calib["seqlen"])
    p.add_argument("--seed", type=int, default=calib["seed"])
    p.add_argument("--device", default="auto", help="where blocks are processed: auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="load dtype (auto: the checkpoint's)")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from harness.pruning import prune_checkpoint

    spec = PruneSpec(
        method=args.method, sparsity=args.sparsity, structure=args.structure,
        owl=OWLSpec(M=args.owl_m, lam=args.owl_lambda) if args.owl else None,
        magnitude_scope=args.magnitude_scope, blocksize=args.blocksize, percdamp=args.percdamp,
        calibration=CalibrationSpec(source=args.calibration, nsamples=args.nsamples,
                                    seqlen=args.seqlen, seed=args.seed),
    )
    report = prune_checkpoint(args.model, spec, args.out, device=args.device, dtype=args.dtype)
    summary = {k: report[k] for k in ("method", "target_sparsity", "measured_sparsity", "nm_valid", "wall_time_s")}
    print(json.dumps({"out": args.out, **summary}))
    return 0
