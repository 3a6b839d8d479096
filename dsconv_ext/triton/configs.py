"""Autotune configurations and their pruning.

The configs are keyed (``@triton.autotune(key=...)``) on the shape, the layout (element
strides; Triton specialises a stride of 1, which also tells its coalescing analysis which axis
is contiguous) and the filter geometry. Pruning keeps the configs that fit the layout:

* channels_last (``stride_c == 1``): channels on the vector axis, wide channel blocks, a few
  output columns and rows per program;
* NCHW and other layouts: the width on the vector axis, long row segments, few channels.

Under the interpreter (CPU, tests) one small config is used: it makes the small test shapes
cross tile boundaries in every dimension, and the interpreter cannot time configs anyway.
In deterministic mode the grad-filter kernel uses one config chosen from the shape alone, so
the order of its fp32 sums never depends on timing.
"""

import triton

from ._mode import INTERPRETED

_CL_FWD = [
    # (BLOCK_H, BLOCK_W, BLOCK_C, warps)
    (2, 8, 64, 4), (4, 8, 32, 4), (1, 16, 64, 4), (2, 16, 32, 4), (4, 4, 128, 8), (2, 8, 128, 8), (1, 8, 128, 4),
]
_NCHW_FWD = [
    (4, 32, 4, 4), (2, 64, 4, 4), (4, 64, 2, 4), (8, 32, 2, 4), (2, 32, 8, 4), (4, 128, 1, 8), (1, 64, 8, 4),
]
# Interpreter: small tiles so tests cross every tile boundary with small shapes.
_INTERP_FWD = {"cl": (4, 8, 16, 1), "nchw": (4, 8, 4, 1)}

_CL_WGRAD = [
    # (BLOCK_P, BLOCK_C, BLOCK_T, warps)
    (16, 32, 16, 4), (32, 32, 8, 4), (8, 64, 16, 4), (16, 64, 8, 8), (32, 64, 4, 8),
]
_NCHW_WGRAD = [
    (64, 4, 8, 4), (32, 8, 8, 4), (128, 2, 8, 8), (64, 8, 4, 4), (32, 4, 16, 4),
]
_INTERP_WGRAD = {"cl": (32, 16, 16, 1), "nchw": (32, 4, 16, 1)}


def _fwd_config(h, w, c, warps):
    return triton.Config({"BLOCK_H": h, "BLOCK_W": w, "BLOCK_C": c}, num_warps=warps, num_stages=1)


def _wgrad_config(p, c, t, warps):
    return triton.Config({"BLOCK_P": p, "BLOCK_C": c, "BLOCK_T": t}, num_warps=warps, num_stages=1)


def _tagged(configs, maker, tag):
    return [(tag, maker(*spec)) for spec in configs]


_FWD_TAGGED = _tagged(_CL_FWD, _fwd_config, "cl") + _tagged(_NCHW_FWD, _fwd_config, "nchw")
_WGRAD_TAGGED = _tagged(_CL_WGRAD, _wgrad_config, "cl") + _tagged(_NCHW_WGRAD, _wgrad_config, "nchw")
if INTERPRETED:
    _FWD_TAGGED += [("interp-" + k, _fwd_config(*v)) for k, v in _INTERP_FWD.items()]
    _WGRAD_TAGGED += [("interp-" + k, _wgrad_config(*v)) for k, v in _INTERP_WGRAD.items()]

FWD_CONFIGS = [cfg for _, cfg in _FWD_TAGGED]
WGRAD_CONFIGS = [cfg for _, cfg in _WGRAD_TAGGED]


def _signature(cfg):
    # Configs are recognised by content, not identity: torch.compile may hand the pruning
    # function copies of them.
    return tuple(sorted(cfg.kwargs.items())), cfg.num_warps


_TAG = {_signature(cfg): tag for tag, cfg in _FWD_TAGGED + _WGRAD_TAGGED}
assert len(_TAG) == len(_FWD_TAGGED) + len(_WGRAD_TAGGED), "config signatures must be unique"

FWD_KEY = ["C", "OH", "OW", "s_xc", "s_xw", "KH", "KW", "SH", "SW", "DH", "DW", "FAMILY", "FLIP"]
DGRAD_KEY = ["C", "H", "W", "s_dyc", "s_dyw", "KH", "KW", "SH", "SW", "DH", "DW", "FAMILY"]
WGRAD_KEY = ["C", "P", "s_xc", "s_xw", "KH", "KW", "SH", "SW", "NEED_W", "ATOMIC"]


def layout_tag(stride_c: int) -> str:
    return "cl" if stride_c == 1 else "nchw"


def _select(configs, tag, interpreted):
    if interpreted:
        return [c for c in configs if _TAG.get(_signature(c)) == "interp-" + tag][:1]
    return [c for c in configs if _TAG.get(_signature(c)) == tag]


def _fits(value, block, minimum):
    # No block much larger than the extent it tiles (masked lanes are wasted work).
    return block <= max(minimum, triton.next_power_of_2(max(int(value), 1)))


def prune_fwd(configs, named_args, **kwargs):
    named_args = {**named_args, **kwargs}  # constexprs may come as keywords
    tag = layout_tag(named_args["s_xc"])
    kept = _select(configs, tag, INTERPRETED)
    if not INTERPRETED:
        fit = [c for c in kept if _fits(named_args["C"], c.kwargs["BLOCK_C"], 8)]
        kept = fit or kept[:1]
    return kept


def prune_dgrad(configs, named_args, **kwargs):
    named_args = {**named_args, **kwargs}
    tag = layout_tag(named_args["s_dyc"])
    kept = _select(configs, tag, INTERPRETED)
    if not INTERPRETED:
        fit = [c for c in kept if _fits(named_args["C"], c.kwargs["BLOCK_C"], 8)]
        kept = fit or kept[:1]
    return kept


def prune_wgrad(configs, named_args, **kwargs):
    named_args = {**named_args, **kwargs}
    tag = layout_tag(named_args["s_xc"])
    kept = _select(configs, tag, INTERPRETED)
    if INTERPRETED:
        return kept
    fit = [c for c in kept if _fits(named_args["C"], c.kwargs["BLOCK_C"], 8)
           and _fits(named_args["KH"] * named_args["KW"], c.kwargs["BLOCK_T"], 4)]
    kept = fit or kept[:1]
    if not named_args["ATOMIC"]:
        # One config from the shape alone: the summation order must not depend on timings.
        return kept[:1]
    return kept
