"""`prunescope tasks`: list the registered tasks; check a task's data before a study uses it."""


def register(sub) -> None:
    p = sub.add_parser("tasks", help="list summarization tasks, or check a task's data")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="the registered tasks").set_defaults(func=run_list)
    check = actions.add_parser("check", help="record count, lengths and every problem in a task's data "
                               "(exit status 1 when there are problems)")
    check.add_argument("name", help="task name (see `prunescope tasks list`)")
    check.add_argument("--data", default=None,
                       help="data file or HF dataset folder (default: the task's own)")
    check.add_argument("--split", default=None, help="split of a Hugging Face dataset")
    check.add_argument("--field", action="append", default=[], metavar="ROLE=NAME",
                       help="field name override, e.g. --field document=article (repeatable)")
    check.add_argument("--tokenizer", default=None, help="local tokenizer folder for token counts")
    check.set_defaults(func=run_check)


def run_list(args) -> int:
    from tasks import get_task, list_tasks

    for name in list_tasks():
        definition = get_task(name)
        source = ("built-in data" if definition.data else
                  f"hub {definition.hub_id}" if definition.hub_id else "local file (data=PATH)")
        reference = definition.fields.get("reference") if definition.has_reference else "none"
        print(f"{name}\t{source}\treference: {reference}\tprompts: {','.join(definition.prompts)}"
              f"\tcite: {' '.join(definition.citation.split())}")
    return 0


def run_check(args) -> int:
    from tasks.check import check_task
    from tasks.errors import DataError

    fields = {}
    for item in args.field:
        role, sep, name = item.partition("=")
        if not sep or not name:
            raise DataError(f"--field {item}: expected ROLE=NAME, e.g. document=article")
        fields[role] = name
    report = check_task(args.name, data=args.data, fields=fields, split=args.split,
                        tokenizer=args.tokenizer)
    print(report.format())
    return 1 if report.problems else 0
