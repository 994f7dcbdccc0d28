"""`prunescope bench`: what pruning saves. `bench sparse`: sparse vs dense matrix products;
`bench model RUN_DIR`: size and generation speed of each checkpoint of a run."""

from harness.cli._types import at_least


def register(sub) -> None:
    p = sub.add_parser("bench", help="sparse-vs-dense timings and per-checkpoint cost")
    kinds = p.add_subparsers(dest="bench", metavar="KIND", required=True)

    s = kinds.add_parser("sparse", help="dense vs COO/CSR (CPU) and 2:4 semi-structured (CUDA) products")
    s.add_argument("--n", type=at_least(1), default=1000, help="CPU matrices are n x n (default 1000)")
    s.add_argument("--sparsities", default="0.5,0.9", help="comma-separated shares of zeros")
    s.add_argument("--trials", type=at_least(1), default=5, help="timed runs per kernel; the median is shown")
    s.add_argument("--config", default="llama-7b",
                   help="config.json whose Linear shapes the CUDA 2:4 run times (default: llama-7b)")
    s.add_argument("--tokens", type=at_least(1), default=2048, help="input rows of each CUDA Linear")
    s.add_argument("--threads", type=at_least(1), default=1,
                   help="CPU threads for every kernel (default 1: like for like; 0: library defaults)")
    s.set_defaults(func=run_sparse)

    m = kinds.add_parser("model", help="size, non-zeros and throughput of each checkpoint of a run")
    m.add_argument("run_dir")
    m.add_argument("--max-new-tokens", type=at_least(1), default=32)
    m.add_argument("--trials", type=at_least(1), default=1)
    m.set_defaults(func=run_model)


def run_sparse(args) -> int:
    from harness.efficiency.bench import BenchError, bench_sparse

    try:
        sparsities = tuple(float(x) for x in args.sparsities.split(","))
    except ValueError:
        raise BenchError(f"--sparsities: expected numbers such as 0.5,0.9 "
                         f"(got {args.sparsities!r})") from None
    table = bench_sparse(n=args.n, sparsities=sparsities, trials=args.trials, config=args.config,
                         tokens=args.tokens, threads=args.threads or None)
    print(format_sparse(table))
    return 0


def format_sparse(table) -> str:
    shown = table.assign(median_ms=table["median_s"] * 1e3)[
        ["device", "library", "format", "shape", "sparsity", "median_ms", "speedup", "max_abs_diff"]]
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def run_model(args) -> int:
    from harness.efficiency.bench import bench_model

    result = bench_model(args.run_dir, max_new_tokens=args.max_new_tokens, trials=args.trials)
    for e in result["checkpoints"]:
        print(f"{e['model']}/{e['checkpoint']}: {e['parameters']:,} parameters, {e['nonzero']:,} non-zero, "
              f"{e['dense_bytes']:,} B dense, {e['sparse_bytes']:,} B sparse {e['formats']}, "
              f"{e['tokens_per_s']:.1f} tokens/s"
              + (f", projected 2:4 Linear speed-up {e['projected_linear_speedup']:.2f}x"
                 if e["projected_linear_speedup"] else ""))
    for s in result["skipped"]:
        print(f"{s['model']}/{s['checkpoint']}: skipped ({s['reason']})")
    print(f"note: {result['note']}; written to {args.run_dir}/bench/model.json")
    return 0
