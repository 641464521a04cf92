"""`ModelCard`: what a checkpoint says about itself in `model_card.json` (written by `genir-mech train`).

    card = ModelCard.read("checkpoints/dsi-synth")        # an empty card when the file is absent (hub models)
    card.data, card.data_hash, card.removed_documents, card.base, card.scheme

The one owner of the card's keys: training writes a ModelCard, and every
reader (default data of a verb, removed documents of the encoder swap, the
base model) asks it, never the JSON.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..docids import ATOMIC, DOCID_SCHEMES
from ..errors import GenIRError

FILE_NAME = "model_card.json"


@dataclass
class ModelCard:
    """Training record of a checkpoint. Unknown keys of older or newer cards are kept in `extra`."""

    objective: str | None = None  # "span" (pretraining) or "dsi"
    base: str | None = None  # checkpoint this one was initialised from
    tokenizer: str | None = None
    data: str | None = None  # the data spec it was trained on (genir_mech.data.loaders.load_dataset)
    data_meta: dict = field(default_factory=dict)
    data_hash: str | None = None
    removed_documents: list[str] = field(default_factory=list)  # documents left out of training
    docid_scheme: str | None = None  # atomic (None: older cards) or a sequence scheme whose mapping is docids.json beside the weights
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @classmethod
    def read(cls, checkpoint: str | Path) -> "ModelCard":
        """The card of a checkpoint directory; an empty card when it has none (e.g. a hub model)."""
        path = Path(checkpoint) / FILE_NAME
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise GenIRError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise GenIRError(f"{path}: expected a JSON object")
        known = {f.name for f in fields(cls)} - {"extra"}
        card = cls(**{k: v for k, v in data.items() if k in known}, extra={k: v for k, v in data.items() if k not in known})
        card.removed_documents = [str(d) for d in card.removed_documents or []]
        if card.docid_scheme is not None and card.docid_scheme not in DOCID_SCHEMES:
            raise GenIRError(f"{path}: docid_scheme {card.docid_scheme!r} is not one of {', '.join(DOCID_SCHEMES)}")
        return card

    @property
    def scheme(self) -> str:
        """The docid scheme every verb reads from the card ("atomic" when the card does not say)."""
        return self.docid_scheme or ATOMIC

    def to_json(self) -> dict:
        data = asdict(self)
        return {**{k: v for k, v in data.items() if k != "extra"}, **data["extra"]}

    def write(self, checkpoint: str | Path) -> Path:
        path = Path(checkpoint) / FILE_NAME
        path.write_text(json.dumps(self.to_json(), indent=2))
        return path
