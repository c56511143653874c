"""Human tables, JSON, parameter sweeps and plots for the quantify command."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from endosec.quantify.errors import ParameterError

__all__ = ["Sweep", "format_table", "parse_sweep", "plot_sweep", "render", "to_json"]

Row = Mapping[str, object]


@dataclass(frozen=True, slots=True)
class Sweep:
    param: str
    values: tuple[float, ...]


def parse_sweep(text: str, allowed: Mapping[str, type]) -> Sweep:
    """``PARAM=a:b:steps`` into evenly spaced values (rounded, de-duplicated for integers)."""
    name, sep, spec = text.partition("=")
    key = name.strip().lstrip("-").replace("-", "_")
    if not sep or key not in allowed:
        raise ParameterError(f"sweep must be PARAM=a:b:steps with PARAM one of "
                             f"{', '.join(sorted(allowed))}, got {text!r}")
    parts = spec.split(":")
    try:
        a, b, steps = float(parts[0]), float(parts[1]), int(parts[2])
    except (IndexError, ValueError):
        raise ParameterError(f"sweep range must be a:b:steps, got {spec!r}") from None
    if len(parts) != 3 or steps < 2 or not (math.isfinite(a) and math.isfinite(b)):
        raise ParameterError(f"sweep range must be a:b:steps with steps >= 2, got {spec!r}")
    values = [float(v) for v in np.linspace(a, b, steps)]
    if allowed[key] is int:
        values = list(dict.fromkeys(float(round(v)) for v in values))
    return Sweep(key, tuple(values))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    return "-" if value is None else str(value)


def format_table(rows: Sequence[Row], columns: Sequence[str]) -> str:
    """A plain aligned table; the first column left-aligned, the rest right-aligned."""
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]

    def line(items: Sequence[str]) -> str:
        first = items[0].ljust(widths[0])
        rest = (item.rjust(w) for item, w in zip(items[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(list(columns)), rule, *(line(row) for row in cells)])


def render(result: Row, skip: Sequence[str] = ()) -> str:
    """One result as a two-column table of its scalar fields."""
    rows = [{"field": k, "value": v} for k, v in result.items()
            if k not in skip and (not isinstance(v, list | dict) or k.endswith("ci"))]
    return format_table(rows, ["field", "value"])


def to_json(data: object) -> str:
    return json.dumps(data, indent=2, allow_nan=False)


def plot_sweep(path: Path, param: str, *, points: Sequence[Row], metrics: Sequence[str],
               title: str, compute_ci: Callable[[Row, str], tuple[float, float] | None]) -> None:
    """Draw each metric against the swept parameter, with its interval when there is one."""
    import matplotlib  # noqa: PLC0415 - heavy, and only needed to draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(len(metrics), 1, figsize=(7, 3.2 * len(metrics)), squeeze=False)
    xs = [float(p[param]) for p in points]  # type: ignore[arg-type]
    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        ys = [float(p[metric]) for p in points]  # type: ignore[arg-type]
        ax.plot(xs, ys, marker="o", label=metric)
        bands = [compute_ci(p, metric) for p in points]
        if all(b is not None for b in bands):
            lows = [b[0] for b in bands if b is not None]
            highs = [b[1] for b in bands if b is not None]
            ax.fill_between(xs, lows, highs, alpha=0.25, label="95% CI")
        ax.set_xlabel(param)
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
        ax.legend()
    axes[0, 0].set_title(title)
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as exc:
        raise ParameterError(f"plot: cannot write {path} ({exc.strerror})") from exc
    finally:
        plt.close(fig)
