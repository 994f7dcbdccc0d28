"""`prunescope recover`: fine-tune a pruned checkpoint (a thin layer over ``harness.recovery.recover``)."""

from harness.recovery.spec import METHODS, PRECISIONS


def register(sub) -> None:
    p = sub.add_parser("recover", help="recovery fine-tuning of a pruned checkpoint: LoRA adapter or full (zeros kept)")
    p.add_argument("--model", required=True, help="pruned checkpoint directory")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--data", required=True,
                   help="task:<name>, a text/JSONL file, or token ids (.pt/.npy/.safetensors)")
    p.add_argument("--nsamples", type=int, default=128, help="training windows drawn from the data")
    p.add_argument("--seqlen", type=int, default=512, help="tokens per training window")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the window offsets")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--seed", type=int, default=0, help="seed of the data order, dropout and adapter init")
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="auto: fp32 on the CPU, bf16 on a GPU")
    p.add_argument("--save-every", type=int, default=50, help="steps between resumable states")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank")
    p.add_argument("--alpha", type=float, default=16.0, help="LoRA alpha")
    p.add_argument("--dropout", type=float, default=0.0, help="LoRA dropout")
    p.add_argument("--target-modules", default="all-linear",
                   help="LoRA targets: comma-separated module names, or all-linear")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="output folder (adapter for lora, checkpoint for full)")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from harness.pruning import CalibrationSpec
    from harness.recovery import LoRASpec, RecoverySpec, recover

    targets = args.target_modules if args.target_modules == "all-linear" else tuple(args.target_modules.split(","))
    spec = RecoverySpec(
        method=args.method, steps=args.steps, lr=args.lr, batch_size=args.batch_size,
        grad_accum=args.grad_accum, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
        seed=args.seed, precision=args.precision, save_every=args.save_every,
        data=CalibrationSpec(source=args.data, nsamples=args.nsamples, seqlen=args.seqlen, seed=args.data_seed),
        lora=LoRASpec(rank=args.rank, alpha=args.alpha, dropout=args.dropout, target_modules=targets),
    )
    report = recover(args.model, spec, args.out, device=args.device, progress=not args.no_progress)
    keys = ("method", "loss_before", "loss_after", "measured_sparsity", "pruned_zeros", "timing")
    print(json.dumps({"out": args.out, **{k: report[k] for k in keys}}))
    return 0
