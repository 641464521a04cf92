"""A resumable seq2seq training loop with warmup, clipping and early stopping.

    loop = TrainLoop(model, LoopConfig(epochs=30), out_dir)
    loop.fit(make_examples, validate)   # resumes from out_dir/resume/ if present

`make_examples(epoch)` returns that epoch's (input_ids, label_ids) pairs, so
randomised objectives (span corruption) are reproducible per epoch on resume.
`validate()` returns a score to maximise; the best weights are kept in
`out_dir` and training stops after `patience` epochs without improvement.
Warmup and clipping matter here: without them, from-scratch DSI training sat
at loss ~ln(#docs) for 20 epochs (measured; see the foundation issue).
"""
from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import GenIRError
from .resume_state import ResumeState, load_resume_state, save_resume_state

Example = tuple[list[int], list[int]]  # (input ids, labels); an encoder-decoder example may add its decoder input ids


@dataclass
class LoopConfig:
    """Training-loop settings: epochs, batch size, learning rate schedule, early stopping, seed and a wall-time cap."""
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 300
    clip: float = 1.0
    weight_decay: float = 0.01
    patience: int = 5
    seed: int = 0
    max_minutes: float = 0.0  # 0 = no wall-clock cap

    def check(self) -> "LoopConfig":
        """Refuse settings that would train nothing or diverge at once, naming the flag (before any data or model is loaded)."""
        at_least = {"epochs": 1, "batch_size": 1, "patience": 1, "warmup_steps": 0, "weight_decay": 0, "max_minutes": 0}
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise GenIRError(f"{name} must be at least {low}, got {getattr(self, name)} (CLI: --{name.replace('_', '-')})")
        for name in ("lr", "clip"):
            if not getattr(self, name) > 0:
                raise GenIRError(f"{name} must be positive, got {getattr(self, name)} (CLI: --{name})")
        return self


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run is reproducible from its config."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def collate(batch: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad (input ids, labels[, decoder input ids]) examples into one batch; labels are padded with -100 so padding is not learned.

    Decoder input ids (a teacher-forced decoder prefix) are right-padded with `pad_id`: the decoder is causal, so
    padding after the last label changes no earlier position.
    """
    width = max(len(x) for x, *_ in batch)
    label_width = max(len(y) for _, y, *_ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), label_width), -100, dtype=torch.long)
    for i, (x, y, *_) in enumerate(batch):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
    out = {"input_ids": ids, "attention_mask": (ids != pad_id).long(), "labels": labels}
    if len(batch[0]) == 3:
        out["decoder_input_ids"] = torch.full((len(batch), label_width), pad_id, dtype=torch.long)
        for i, (_, _, d) in enumerate(batch):
            out["decoder_input_ids"][i, : len(d)] = torch.tensor(d)
    return out


class TrainLoop:
    """A resumable training loop: checkpoints its state every epoch, keeps the best weights, stops early.

    loop = TrainLoop(model, LoopConfig(epochs=3), "runs/train/x", pad_id=0)
    result = loop.fit(make_examples, validate, save_best)   # rerun after a kill: resumes
    """
    def __init__(self, model, config: LoopConfig, out_dir: str | Path, pad_id: int = 0, length_buckets: int = 0):
        self.model, self.config, self.out_dir, self.pad_id = model, config, Path(out_dir), pad_id
        # > 0: batches are drawn from windows of `length_buckets` batches sorted by length, so examples of very
        # different lengths (128- and 512-token contexts) are not padded to the longest of a random batch
        self.length_buckets = length_buckets
        self.resume_path = self.out_dir / "resume" / "state.pt"
        self.history: list[dict] = []

    def _schedule(self, total_steps: int):
        warm = max(1, self.config.warmup_steps)

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return max(0.05, 1.0 - (step - warm) / max(1, total_steps - warm))

        return factor

    def _batches(self, examples: list[Example], rng: random.Random) -> list[list[int]]:
        """Example indices of each batch of an epoch, in a seeded random order (length-bucketed if asked)."""
        size = self.config.batch_size
        order = rng.sample(range(len(examples)), len(examples))
        if not self.length_buckets:
            return [order[i : i + size] for i in range(0, len(order), size)]
        window = size * self.length_buckets
        batches = []
        for w in range(0, len(order), window):
            chunk = sorted(order[w : w + window], key=lambda i: len(examples[i][0]))
            batches += [chunk[i : i + size] for i in range(0, len(chunk), size)]
        return rng.sample(batches, len(batches))

    def fit(self, make_examples: Callable[[int], list[Example]], validate: Callable[[], float], save_best: Callable[[], None]) -> dict:
        """Train until the epoch budget, the patience or the wall-time cap runs out; returns history and best score."""
        cfg = self.config
        seed_everything(cfg.seed)
        opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps_per_epoch = (len(make_examples(0)) + cfg.batch_size - 1) // cfg.batch_size
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self._schedule(steps_per_epoch * cfg.epochs))
        start_epoch, best, bad_epochs, elapsed = 0, float("-inf"), 0, 0.0
        if self.resume_path.exists():
            remedy = f"delete {self.resume_path.parent} to restart this run from scratch, or pass --overwrite"
            state = load_resume_state(self.resume_path, remedy)
            try:
                self.model.load_state_dict(state.model)
                opt.load_state_dict(state.optimizer)
                sched.load_state_dict(state.scheduler)
                torch.set_rng_state(state.torch_rng)
            except Exception as exc:  # other parameter names or shapes, another optimizer layout: not this run's state
                reason = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
                raise GenIRError(f"{self.resume_path}: resume state does not fit this run ({reason}); {remedy}") from None
            start_epoch, best, bad_epochs = state.epoch + 1, state.best, state.bad_epochs
            elapsed, self.history = state.elapsed, state.history
            tqdm.write(f"resuming {self.out_dir} at epoch {start_epoch} (best so far {best:.4f})")
        started = time.time() - elapsed
        if bad_epochs >= cfg.patience or (cfg.max_minutes and elapsed > cfg.max_minutes * 60):
            # a finished run stays finished when the same command is rerun
            start_epoch = cfg.epochs
        for epoch in range(start_epoch, cfg.epochs):
            self.model.train()
            examples = make_examples(epoch)
            batches = self._batches(examples, random.Random(cfg.seed * 1000 + epoch))
            losses = []
            bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
            for rows in bar:
                batch = collate([examples[i] for i in rows], self.pad_id)
                loss = self.model(**batch).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip)
                opt.step()
                sched.step()
                losses.append(loss.item())
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
            self.model.eval()
            score = validate()
            record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "validation": score, "seconds": round(time.time() - started, 1)}
            self.history.append(record)
            tqdm.write(json.dumps(record))
            if score > best:
                best, bad_epochs = score, 0
                save_best()
            else:
                bad_epochs += 1
            # a kill while saving leaves the previous epoch's state whole, never a truncated one
            save_resume_state(self.resume_path, ResumeState(
                model=self.model.state_dict(), optimizer=opt.state_dict(), torch_rng=torch.get_rng_state(),
                epoch=epoch, best=best, bad_epochs=bad_epochs, elapsed=time.time() - started, history=self.history,
                scheduler=sched.state_dict(), config=asdict(cfg),
            ))
            if bad_epochs >= cfg.patience:
                tqdm.write(f"early stop: no improvement for {cfg.patience} epochs")
                break
            if cfg.max_minutes and time.time() - started > cfg.max_minutes * 60:
                tqdm.write(f"stopping at the {cfg.max_minutes}-minute cap")
                break
        return {"best_validation": best, "train_seconds": round(time.time() - started, 1), "history": self.history}
