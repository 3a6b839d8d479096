"""``dsconv-ext backends``: the backends this install can run."""

NAME = "backends"
HELP = "list the backends available in this install"


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    from .. import available_backends

    print(" ".join(available_backends()))
    return 0
