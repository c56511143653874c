"""The live dashboard served by the admin listener: page assets and the figures it plots.

The page (``index.html``, ``dashboard.js``, ``dashboard.css``) is plain HTML and JavaScript with
no build step and no external URL, so it works on an air-gapped admin network.
"""

from __future__ import annotations

from endosec.observe.dashboard.assets import asset
from endosec.observe.dashboard.risk import defeat_estimate
from endosec.observe.dashboard.series import SeriesSampler

__all__ = ["SeriesSampler", "asset", "defeat_estimate"]
