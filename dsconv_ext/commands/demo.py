"""``dsconv-ext demo``: a short tour (what ``make demo`` runs)."""

NAME = "demo"
HELP = "a short tour: correctness and speed of the ops against PyTorch, the modules, fitting"


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    from ..demo import run_demo

    run_demo()
    return 0
