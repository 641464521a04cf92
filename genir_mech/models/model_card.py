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

from ..data.loaders import read_utf8
from ..data.synthetic import SyntheticConfig
from ..docids import ATOMIC, DOCID_SCHEMES
from ..errors import GenIRError

FILE_NAME = "model_card.json"


# The JSON type of each field a card may hold (null is always allowed: the field is then absent), and what it holds.
FIELD_TYPES = {
    "objective": (str, "a string such as \"dsi\" or \"span\""),
    "base": (str, "a model name (a folder, embedded checkpoint or hub id)"),
    "tokenizer": (str, "a model name (a folder, embedded checkpoint or hub id)"),
    "data": ((str, dict), "a data spec (a string: synthetic:..., ir_datasets:<id> or a data folder; or an object of synthetic corpus options)"),
    "data_meta": (dict, "a JSON object"),
    "data_hash": (str, "a string"),
    "removed_documents": (list, "a list of document ids"),
    "docid_scheme": (str, "a string naming a docid scheme"),
    "metrics": (dict, "a JSON object"),
}


def _check_field(path: Path, key: str, value) -> None:
    """A GenIRError naming the card and the field unless `value` has the field's JSON type (a string of ids is no list of them)."""
    if key not in FIELD_TYPES or value is None:
        return
    kind, what = FIELD_TYPES[key]
    shown = json.dumps(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    if not isinstance(value, kind):
        raise GenIRError(f"{path}: field {key!r} must be {what}, got {type(value).__name__} {shown}; correct the model card")
    if key == "data" and isinstance(value, dict):
        options = SyntheticConfig.__dataclass_fields__
        for option, number in value.items():
            if option not in options:
                raise GenIRError(f"{path}: field 'data': unknown synthetic corpus option {option!r} (options: {', '.join(options)}); correct the model card")
            if isinstance(number, bool) or not isinstance(number, int):
                raise GenIRError(f"{path}: field 'data': synthetic corpus option {option!r} must be an integer, got {json.dumps(number)}; "
                                 "correct the model card")
    if key == "removed_documents":
        bad = [d for d in value if isinstance(d, bool) or not isinstance(d, (str, int))]
        if bad:
            raise GenIRError(f"{path}: field 'removed_documents' must list document ids (strings or integers), got {json.dumps(bad[0])}; "
                             "correct the model card")


@dataclass
class ModelCard:
    """Training record of a checkpoint. Unknown keys of older or newer cards are kept in `extra`."""

    objective: str | None = None  # "span" (pretraining) or "dsi"
    base: str | None = None  # checkpoint this one was initialised from
    tokenizer: str | None = None
    data: str | dict | None = None  # the data spec it was trained on (genir_mech.data.loaders.load_dataset: a spec string or synthetic options)
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
            data = json.loads(read_utf8(path))
        except json.JSONDecodeError as exc:
            raise GenIRError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise GenIRError(f"{path}: expected a JSON object")
        for key, value in data.items():
            _check_field(path, key, value)
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known and v is not None}  # null: the field's default
        card = cls(**values, extra={k: v for k, v in data.items() if k not in known})
        card.removed_documents = [str(d) for d in card.removed_documents]
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
