"""The one place figures are written to disk (same layout, resolution and clean-up for every plot)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt


def save_figure(fig, path) -> Path:
    """Save a figure as PNG (creating the folder) and close it, so long sweeps do not leak figures."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return path
