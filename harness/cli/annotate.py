"""`prunescope annotate`: export blinded batches, import answers, compute agreement."""

from harness.cli._types import config_field
from harness.config import AnalysisConfig


def register(sub) -> None:
    p = sub.add_parser("annotate", help="blinded human annotation: export batches, import answers, agreement")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)

    e = verbs.add_parser("export", help="write blinded annotation batches (one per system pair)")
    e.add_argument("run_dir")
    e.add_argument("--n", type=int, default=100, help="documents per batch (stratified by task)")
    e.add_argument("--annotators", required=True, help="comma-separated annotator names, e.g. a,b")
    e.add_argument("--overlap", type=float, default=1.0,
                   help="share of items every annotator sees (the rest are split); default 1.0")
    e.add_argument("--format", dest="fmt", default="csv", choices=["csv", "jsonl", "labelstudio"])
    e.add_argument("--pair", action="append", default=None, metavar="SYSTEM,BASELINE",
                   help="systems to compare (label or cell key); repeatable; default: each pruned system vs dense")
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=run_export)

    i = verbs.add_parser("import", help="validate and store answer files (all or nothing)")
    i.add_argument("run_dir")
    i.add_argument("files", nargs="+")
    i.set_defaults(func=run_import)

    s = verbs.add_parser("simulate", help="write simulated answer files for a batch (demo only)")
    s.add_argument("run_dir")
    s.add_argument("batch_id")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=run_simulate)

    a = verbs.add_parser("agreement", help="agreement statistics and preferences of imported answers")
    a.add_argument("run_dir")
    a.add_argument("--bootstrap", type=config_field(AnalysisConfig, "bootstrap"), default=1000)
    a.add_argument("--seed", type=int, default=0)
    a.set_defaults(func=run_agreement)


def run_export(args) -> int:
    from annotation.export import export_batches
    from harness.errors import PrunescopeError

    pairs = None
    if args.pair:
        pairs = [tuple(p.split(",", 1)) for p in args.pair]
        if any(len(p) != 2 for p in pairs):
            raise PrunescopeError(f"--pair takes SYSTEM,BASELINE (got {args.pair})")
    for path in export_batches(args.run_dir, n=args.n, annotators=args.annotators.split(","),
                               overlap=args.overlap, fmt=args.fmt, pairs=pairs, seed=args.seed):
        print(path / "export")
    return 0


def run_import(args) -> int:
    from annotation.importer import import_answers

    print(import_answers(args.run_dir, args.files).summary())
    return 0


def run_simulate(args) -> int:
    from annotation.batch import batch_dir
    from annotation.simulate import answer_batch

    for path in answer_batch(batch_dir(args.run_dir, args.batch_id), args.seed):
        print(path)
    return 0


def run_agreement(args) -> int:
    from analysis.agreement import SIMULATED_NOTE, compute_agreement, write_agreement
    from harness.errors import PrunescopeError

    result = compute_agreement(args.run_dir, args.bootstrap, args.seed)
    if result is None:
        raise PrunescopeError(f"{args.run_dir}: no imported answers; run `prunescope annotate import` first")
    path = write_agreement(args.run_dir, result)
    if result.simulated:
        print(SIMULATED_NOTE)
    print(result.agreement.drop(columns=["batch"]).to_string(index=False))
    print(result.preferences.drop(columns=["batch"]).to_string(index=False))
    print(path)
    return 0
