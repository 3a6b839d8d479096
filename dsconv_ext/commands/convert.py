"""``dsconv-ext convert MODEL --to dog [--checkpoint PATH] --out FILE.safetensors``: convert the
depthwise convolutions of a timm (or torchvision) model, print the report, write the weights.

MODEL is a timm model name (built with ``pretrained=False``: nothing is downloaded) or
``torchvision:NAME``. ``--checkpoint`` loads a state dict (``.pth``/``.pt``/``.bin`` or
``.safetensors``; a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is unwrapped) before
converting. The output holds the converted model's state dict, with metadata (model, family,
options) to rebuild it: ``convert(create(MODEL), to=..., fit=False)`` then ``load_state_dict``.
"""

import json
import sys

NAME = "convert"
HELP = "convert a model's depthwise convs to DoG-jet / filter-bank / dsconv_ext layers and save the weights"


def add_arguments(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help="timm model name, or torchvision:NAME")
    parser.add_argument("--to", choices=("depthwise", "dog", "bank"), default="dog", help="family (default: dog)")
    parser.add_argument("--checkpoint", metavar="PATH", help="state dict to load before converting")
    parser.add_argument("--out", metavar="FILE.safetensors", help="where to write the converted state dict")
    parser.add_argument("--bank", default="master8", help="bank for --to bank: master8 or dog_jet (default master8)")
    parser.add_argument("--select", action="store_true", help="bank: one bank filter per channel (master key)")
    parser.add_argument("--offset", action="store_true", help="bank: a per-channel constant (keeps each filter's mean)")
    parser.add_argument("--profile", choices=("integrated", "sampled"), default="integrated", help="DoG profile")
    parser.add_argument("--levels", type=int, default=4, help="DoG fit: coarse-to-fine search levels (default 4)")
    parser.add_argument("--refine-steps", type=int, default=0, help="DoG fit: extra L-BFGS steps (default 0)")
    parser.add_argument("--include", action="append", metavar="GLOB", help="only layers matching (repeatable)")
    parser.add_argument("--exclude", action="append", metavar="GLOB", help="skip layers matching (repeatable)")
    parser.add_argument("--no-fit", action="store_true", help="keep the new layers' own initialisation")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON ('-': print it instead of the table)")


def build_model(name: str):
    """A timm model (``pretrained=False``) or ``torchvision:NAME``."""
    if name.startswith(("torchvision:", "tv:")):
        import torchvision

        arch = name.split(":", 1)[1]
        try:
            return torchvision.models.get_model(arch)
        except ValueError as error:
            raise ValueError(f"MODEL: unknown torchvision model {arch!r}") from error
    import timm

    try:
        return timm.create_model(name, pretrained=False)
    except RuntimeError as error:
        raise ValueError(f"MODEL: {error}") from error


def load_state_dict(path: str):
    import torch

    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"--checkpoint: expected a state dict in {path}, got {type(state).__name__}")
    return state


def save_state_dict(model, path: str, metadata: dict) -> None:
    from safetensors.torch import save_file

    # Clone: safetensors refuses tensors that share memory; contiguous for the file layout.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(tensors, path, metadata={k: str(v) for k, v in metadata.items()})


def run(args) -> int:
    from .. import __version__
    from ..surgery import convert

    def fail(message: str) -> int:
        print(f"dsconv-ext convert: error: {message}", file=sys.stderr)
        return 2

    if args.out and not args.out.endswith(".safetensors"):
        return fail(f"--out: expected a .safetensors file, got {args.out!r}")
    try:
        model = build_model(args.model)
        if args.checkpoint:
            model.load_state_dict(load_state_dict(args.checkpoint))
        model.eval()
        report = convert(model, to=args.to, fit=not args.no_fit, bank=args.bank, include=args.include,
                         exclude=args.exclude, select=args.select, offset=args.offset, profile=args.profile,
                         levels=args.levels, refine_steps=args.refine_steps)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError, KeyError) as error:
        return fail(str(error))
    if args.json == "-":
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(report)
    if args.json and args.json != "-":
        with open(args.json, "w") as handle:
            json.dump(report.to_dict(), handle, indent=1)
    if args.out:
        metadata = {"format": "dsconv_ext.convert", "dsconv_ext": __version__, "model": args.model, "to": args.to,
                    "options": json.dumps(report.to_dict()["options"]), "checkpoint": args.checkpoint or ""}
        save_state_dict(model, args.out, metadata)
        if args.json != "-":
            print(f"wrote {args.out}")
    return 0
