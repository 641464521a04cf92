"""The one place figures are written to disk (same layout, resolution and clean-up for every plot)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from ..provenance import written_atomically


def save_figure(fig, path) -> Path:
    """Save a figure as PNG (creating the folder) and close it, so long sweeps do not leak figures."""
    path = Path(path)
    fig.tight_layout()
    try:
        with written_atomically(path) as tmp:  # a killed process leaves no truncated PNG under the final name
            fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=150, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path
