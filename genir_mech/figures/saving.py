"""The one place figures are written to disk: PNG for screens and Markdown, PDF for papers, same layout for both."""
from __future__ import annotations

from pathlib import Path

from ..provenance import written_atomically

FORMATS = ("png", "pdf")
# no creation date in the PDF: the same tables must give byte-identical figures (a resumed run is compared with an
# uninterrupted one, and a rerun must not look like a change)
METADATA = {"png": {}, "pdf": {"CreationDate": None}}


def save_figure(fig, path) -> Path:
    """Save `fig` as `<path>.png` and `<path>.pdf` (creating the folder); returns the PNG path.

    The figure stays open for display (figures here are made without pyplot,
    so nothing accumulates in pyplot's registry).
    """
    path = Path(path).with_suffix(".png")
    for fmt in FORMATS:
        with written_atomically(path.with_suffix(f".{fmt}")) as tmp:  # a killed process leaves no truncated file under the final name
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight", metadata=METADATA[fmt])
    return path


def saved(fig, path):
    """`fig`, saved first when `path` is given: what every plot_* function returns."""
    if path is not None:
        save_figure(fig, path)
    return fig
