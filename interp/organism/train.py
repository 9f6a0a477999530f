"""Train the organism: a small GPT-2 (`GPT2LMHeadModel`, GPT-2 tokenizer) on the generated corpus.

Seeded and single-process. During training the softmax runs over the corpus's own token ids only (the output
rows of tokens that never occur would only be pushed down); evaluation uses the full 50,257-way softmax.
Every `select_every` steps the model is scored on validation material (`evaluate.validation_scores`, disjoint
from the evaluation's); the checkpoint written is the one whose weaker validation score (IOI on unseen templates,
copying a capital from the prompt) is highest, because held-out IOI peaks before the copying behaviour matures.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from interp.organism.corpus import token_stream
from interp.tokens import gpt2_tokenizer


@contextmanager
def torch_threads(n: int):
    """Run with n torch threads, then give the process back the count it had."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class TrainConfig:
    n_layer: int = 4
    n_head: int = 8
    n_embd: int = 128
    n_ctx: int = 64
    batch_size: int = 32
    steps: int = 5000
    lr: float = 3e-3
    warmup: int = 200
    weight_decay: float = 0.1
    seed: int = 0
    threads: int = 1


def build_model(cfg: TrainConfig):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=50257,
        n_positions=cfg.n_ctx,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(config)


def learning_rate(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def selection_score(scores: dict[str, float]) -> tuple[float, float]:
    """Higher is better: the weaker validation behaviour first, then the IOI logit difference."""
    return min(scores["val_ioi_accuracy"], scores["val_extractive_recall"]), scores["val_ioi_logit_diff"]


def train(out_dir: str | Path, cfg: TrainConfig = TrainConfig(), select_every: int = 250, quiet: bool = False) -> dict:
    """Train, select a checkpoint on validation scores, evaluate it, and write it as an HF checkpoint (fp16
    safetensors + config + training.json) to `out_dir`."""
    from interp.organism.evaluate import evaluate_logits_fn, validation_scores

    with torch_threads(cfg.threads):  # the seeded run is single-process; the caller keeps its own count
        torch.manual_seed(cfg.seed)
        tokenizer = gpt2_tokenizer()
        tokens_needed = cfg.steps * cfg.batch_size * cfg.n_ctx
        stream = torch.tensor(token_stream(tokens_needed, cfg.seed, tokenizer)[:tokens_needed]).view(-1, cfg.n_ctx)
        vocab = torch.unique(stream)  # the restricted softmax's token ids
        to_restricted = torch.full((50257,), -1, dtype=torch.long)
        to_restricted[vocab] = torch.arange(len(vocab))

        model = build_model(cfg)
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
            betas=(0.9, 0.95),
        )
        order = torch.randperm(len(stream), generator=torch.Generator().manual_seed(cfg.seed))
        history, best, start = [], None, time.time()
        last_logits = lambda ids: model(ids).logits[:, -1]  # noqa: E731
        progress = tqdm(range(cfg.steps), disable=quiet, desc="training organism")
        for step in progress:
            batch = stream[order[step * cfg.batch_size : (step + 1) * cfg.batch_size]]
            hidden = model.transformer(batch).last_hidden_state[:, :-1]
            logits = hidden @ model.transformer.wte.weight[vocab].T
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), to_restricted[batch[:, 1:]].flatten())
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            progress.set_postfix(loss=f"{loss.item():.3f}")
            if (step + 1) % select_every == 0 or step + 1 == cfg.steps:
                model.eval()
                scores = validation_scores(last_logits)
                model.train()
                history.append(
                    {
                        "step": step + 1,
                        "loss": round(loss.item(), 4),
                        "minutes": round((time.time() - start) / 60, 2),
                        **scores,
                    }
                )
                if not quiet:
                    tqdm.write(json.dumps(history[-1]))
                if best is None or selection_score(scores) >= selection_score(best[1]):  # ties: the later one
                    best = step + 1, scores, {k: v.detach().clone() for k, v in model.state_dict().items()}
        train_minutes = round((time.time() - start) / 60, 2)
        selected_step, _, state = best
        model.load_state_dict(state)
        model.eval()
        evaluation = evaluate_logits_fn(last_logits)

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        model.half().save_pretrained(out_dir, safe_serialization=True)
        info = {
            "config": asdict(cfg),
            "tokens_seen": tokens_needed,
            "train_minutes": train_minutes,
            "torch": torch.__version__,
            "selected_step": selected_step,
            "evaluation": evaluation,
            "history": history,
        }
        (out_dir / "training.json").write_text(json.dumps(info, indent=2) + "\n")
        return info
