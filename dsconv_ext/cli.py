"""The ``dsconv-ext`` command."""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="dsconv-ext", description="dsconv_ext: depthwise convolution tools")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="a short tour: correctness and speed of the ops, the modules")
    demo.add_argument("--quick", action="store_true", help="smaller batch, fewer repeats")
    commands.add_parser("backends", help="list the backends available in this install")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from .demo import run_demo

        run_demo(quick=args.quick)
    elif args.command == "backends":
        from . import available_backends

        print(" ".join(available_backends()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
