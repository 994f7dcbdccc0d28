"""`prunescope prune`: prune one checkpoint (a thin layer over ``harness.pruning.prune_checkpoint``).

Defaults come from the spec dataclasses and choices from the method registry."""

from dataclasses import fields

from harness.pruning import registry
from harness.pruning.spec import CalibrationSpec, OWLSpec, PruneSpec
from harness.pruning.structured.l0_spec import L0Spec
from harness.pruning.structured.spec import PRIORS, STRUCTURED_METHODS, StructuredSpec


def _defaults(cls) -> dict:
    return {f.name: f.default for f in fields(cls) if not callable(f.default_factory)}


def register(sub) -> None:
    spec, owl, calib = _defaults(PruneSpec), _defaults(OWLSpec), _defaults(CalibrationSpec)
    st = _defaults(StructuredSpec)
    p = sub.add_parser("prune", help=f"prune a checkpoint ({', '.join(registry.METHODS)}) into a new checkpoint")
    p.add_argument("--model", required=True, help="checkpoint directory of the dense model")
    p.add_argument("--method", required=True, choices=tuple(registry.METHODS))
    p.add_argument("--sparsity", type=float, default=spec["sparsity"],
                   help="unstructured target (ignored for N:M); structured: share of prunable parameters")
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
    g = p.add_argument_group(f"structured methods ({', '.join(STRUCTURED_METHODS)})")
    g.add_argument("--units", default=",".join(st["units"]), help="unit kinds to remove: attn, ffn or attn,ffn")
    g.add_argument("--prior", default=st["prior"], choices=PRIORS, help="unit ranking / Bonsai sampling prior")
    g.add_argument("--prune-frac", type=float, default=st["prune_frac"], help="Bonsai: share of units removed per round")
    g.add_argument("--samples", type=int, default=st["samples"], help="Bonsai: sub-models per round (masks + complements)")
    g.add_argument("--allocation", default=st["allocation"], choices=("uniform", "global"),
                   help="uniform: same kept counts per block (a smaller standard config); global: per-block")
    g.add_argument("--target-shape", default=None,
                   help="explicit per-block target instead of --sparsity, e.g. attn_units=4,ffn_units=2048 or blocks=24")
    g.add_argument("--l0-steps", type=int, default=L0Spec.steps, help="l0: gate training steps (one calibration batch each)")
    p.add_argument("--device", default="auto", help="where blocks are processed: auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="load dtype (auto: the checkpoint's)")
    p.add_argument("--out", required=True, help="output checkpoint directory (new or empty, or a checkpoint "
                   "of the same spec; never the --model folder)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace whatever --out holds (a file, another checkpoint, any folder)")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from harness.pruning import prune_checkpoint
    from harness.pruning.checkpoint import check_model_dir, check_out_dir
    from harness.pruning.structured.spec import parse_structured_args

    structured = None
    if args.method in STRUCTURED_METHODS:
        structured = parse_structured_args(units=args.units, prior=args.prior, prune_frac=args.prune_frac,
                                           samples=args.samples, allocation=args.allocation,
                                           target_shape=args.target_shape, seed=args.seed,
                                           l0=L0Spec(steps=args.l0_steps) if args.method == "l0" else None)
    spec = PruneSpec(
        method=args.method, sparsity=args.sparsity, structure=args.structure,
        owl=OWLSpec(M=args.owl_m, lam=args.owl_lambda) if args.owl else None,
        magnitude_scope=args.magnitude_scope, blocksize=args.blocksize, percdamp=args.percdamp,
        calibration=CalibrationSpec(source=args.calibration, nsamples=args.nsamples,
                                    seqlen=args.seqlen, seed=args.seed),
        structured=structured,
    )
    check_model_dir(args.model)
    check_out_dir(args.model, args.out, spec, overwrite=args.overwrite)
    report = prune_checkpoint(args.model, spec, args.out, device=args.device, dtype=args.dtype)
    keys = ("method", "target_sparsity", "measured_sparsity", "nm_valid", "shape", "parameters", "wall_time_s")
    summary = {k: report[k] for k in keys if k in report}
    print(json.dumps({"out": args.out, **summary}))
    return 0
