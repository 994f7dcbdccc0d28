"""`prunescope status`: the grid of a run directory with each cell's state."""


def register(sub) -> None:
    p = sub.add_parser("status", help="show each cell's state, times and errors")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    from harness.runner.status import format_rows, rows_as_json, run_status

    rows = run_status(args.run_dir)
    print(rows_as_json(rows) if args.json else format_rows(rows))
    return 0
