"""The ``dsconv-ext`` command: one sub-command per module in ``dsconv_ext.commands``."""

import argparse
import importlib
import pkgutil
import sys

from . import commands


def _command_modules():
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        yield importlib.import_module(f"{commands.__name__}.{info.name}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="dsconv-ext", description="dsconv_ext: depthwise convolution tools")
    subparsers = parser.add_subparsers(dest="command", required=True)
    runners = {}
    for module in _command_modules():
        module.add_arguments(subparsers.add_parser(module.NAME, help=module.HELP, description=module.HELP))
        runners[module.NAME] = module.run
    args = parser.parse_args(argv)
    return runners[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
