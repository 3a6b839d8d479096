"""Reports of model surgery: one row per layer, totals, printable as a table (``str``) and as a
plain, JSON-serialisable dict (``to_dict``)."""

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: Optional[str] = None) -> str:
    """A plain-text table; ``align`` has one character per column, ``l`` or ``r``."""
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    align = align or "l" * len(headers)

    def line(row):
        parts = [v.ljust(w) if a == "l" else v.rjust(w) for v, w, a in zip(row, widths, align)]
        return "  ".join(parts).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells[1:]]
    return "\n".join(out)


def kernel_text(kernel_size) -> str:
    return "x".join(str(k) for k in kernel_size)


def _cos_text(value: Optional[float]) -> Optional[str]:
    return None if value is None else f"{value:.4f}"


@dataclass
class LayerRow:
    """One converted (or reverted) layer."""

    name: str
    kind: str                      # what it was: "conv", "conv_same", "conv (mixed)", "DoGConv2d", ...
    new_type: str                  # what it is now
    kernel_size: tuple
    stride: tuple
    channels: int
    params_before: int
    params_after: int
    cos_median: Optional[float] = None   # cosine between old and new filters, over channels
    cos_min: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        out["kernel_size"] = list(self.kernel_size)
        out["stride"] = list(self.stride)
        return out


@dataclass
class SkippedRow:
    """A depthwise layer that was left as it is, and why."""

    name: str
    kind: str
    kernel_size: tuple
    channels: int
    reason: str

    def to_dict(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        out["kernel_size"] = list(self.kernel_size)
        return out


@dataclass
class ConversionReport:
    """What ``convert`` (or ``revert``) did.

    ``layers``: one ``LayerRow`` per replaced layer; ``skipped``: depthwise layers left alone,
    with the reason; ``options``: the family options used; ``model_params_before/after``: all
    parameters of the model; ``fit_seconds``: time spent fitting.
    """

    to: str
    layers: List[LayerRow] = field(default_factory=list)
    skipped: List[SkippedRow] = field(default_factory=list)
    options: Dict[str, Any] = field(default_factory=dict)
    model_params_before: int = 0
    model_params_after: int = 0
    fit_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def params_before(self) -> int:
        """Parameters of the converted layers before conversion."""
        return sum(row.params_before for row in self.layers)

    @property
    def params_after(self) -> int:
        return sum(row.params_after for row in self.layers)

    @property
    def cos_median(self) -> Optional[float]:
        """Median over layers of the per-layer median cosine."""
        values = sorted(row.cos_median for row in self.layers if row.cos_median is not None)
        if not values:
            return None
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])

    @property
    def cos_min(self) -> Optional[float]:
        values = [row.cos_min for row in self.layers if row.cos_min is not None]
        return min(values) if values else None

    def totals(self) -> Dict[str, Any]:
        return {
            "layers": len(self.layers),
            "skipped": len(self.skipped),
            "channels": sum(row.channels for row in self.layers),
            "params_before": self.params_before,
            "params_after": self.params_after,
            "model_params_before": self.model_params_before,
            "model_params_after": self.model_params_after,
            "cos_median": self.cos_median,
            "cos_min": self.cos_min,
            "fit_seconds": round(self.fit_seconds, 4),
            "seconds": round(self.seconds, 4),
        }

    def to_dict(self) -> Dict[str, Any]:
        return {
            "to": self.to,
            "options": {k: (v if isinstance(v, (str, int, float, bool, type(None))) else str(v))
                        for k, v in self.options.items()},
            "layers": [row.to_dict() for row in self.layers],
            "skipped": [row.to_dict() for row in self.skipped],
            "totals": self.totals(),
        }

    def __str__(self) -> str:
        options = ", ".join(f"{k}={v}" for k, v in self.options.items())
        head = (f"{'revert' if self.to == 'conv' else 'convert'} -> {self.to}"
                + (f" ({options})" if options else "")
                + f": {len(self.layers)} layers replaced, {len(self.skipped)} skipped"
                + (f", fit {self.fit_seconds:.2f} s" if self.fit_seconds else ""))
        rows = [
            (r.name, r.kind, r.new_type, kernel_text(r.kernel_size), kernel_text(r.stride), r.channels,
             f"{r.params_before:,}", f"{r.params_after:,}", _cos_text(r.cos_median), _cos_text(r.cos_min))
            for r in self.layers
        ]
        rows.append(("total", "", "", "", "", sum(r.channels for r in self.layers),
                     f"{self.params_before:,}", f"{self.params_after:,}",
                     _cos_text(self.cos_median), _cos_text(self.cos_min)))
        parts = [head]
        if self.layers:
            parts.append(format_table(
                ("layer", "was", "now", "kernel", "stride", "channels", "params before", "params after",
                 "cos median", "cos min"),
                rows, "lllllrrrrr"))
        before, after = self.model_params_before, self.model_params_after
        if before:
            change = 100.0 * (after - before) / before
            parts.append(f"model parameters: {before:,} -> {after:,} ({change:+.1f} %)")
        if self.skipped:
            parts.append("skipped:")
            parts.append(format_table(
                ("layer", "kind", "kernel", "channels", "reason"),
                [(s.name, s.kind, kernel_text(s.kernel_size), s.channels, s.reason) for s in self.skipped],
                "lllrl"))
        return "\n".join(parts)
