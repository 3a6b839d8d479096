"""``dsconv-ext demo``: a short tour (what ``make demo`` runs)."""

NAME = "demo"
HELP = "a short tour: correctness and speed of the ops against PyTorch, the modules, fitting"


def add_arguments(parser) -> None:
    parser.add_argument("--quick", action="store_true", help="smaller batch, fewer repeats")


def run(args) -> int:
    from ..demo import run_demo

    run_demo(quick=args.quick)
    return 0
