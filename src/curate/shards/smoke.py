"""A smoke test of a shard set: train a tiny GPT on it for a few hundred steps and watch loss and grad norm.

It answers two questions before GPU hours are spent: does the loss go down on these tokens (so the shards
decode to text a model can learn, not misaligned ids or a wrong dtype), and which documents are behind the
loss or gradient spikes (repeated-token loops, binary junk and boilerplate are the usual suspects; OLMo 2
traced its spikes to repeated n-grams, arXiv:2501.00656).

The model is GPT-2 shaped and written plainly: token and learned position embeddings, pre-LN blocks of causal
self-attention (``F.scaled_dot_product_attention``) and a 4x GELU MLP, a final LayerNorm and an output head of
its own, GPT-2's initialisation (normal, std 0.02), no dropout. AdamW (betas 0.9/0.95, weight decay 0.1), a
linear warm-up then cosine decay to a tenth of ``lr``, and the gradient clipped to norm ``grad_clip``; the norm
recorded is the one before clipping.

The head is not tied to the token embedding because a smoke test whose clean runs spike by themselves cannot
point at bad documents. On clean text (300 news articles and 150 forum threads, the defaults), every one of 6
seeds with a tied head had a one-step grad-norm spike of 14–33x the running median in its first 60 steps,
with the loss rising; untied, 3 of 8 seeds had one over 10x. Those that remain are the optimizer's, not a
document's: every window of the batch has a high gradient, which :attr:`Spike.concentration` shows and the
report says. With the planted ``m m m …`` page, untied runs named it as the top document of 2/3 or more of
their spikes in each of 6 seeds.

**Compact vocabulary.** A 100k vocabulary (cl100k) would make the embedding and the output softmax most of the
cost on a CPU, so before training the token ids that occur in the windows this run reads are collected and
mapped once to ``0 … V-1`` in sorted order (``torch.searchsorted`` against the sorted ids). A shard set small
enough for a smoke run holds a few thousand to tens of thousands of distinct ids; the loss is then over V
classes, so the first loss is about ``ln V`` rather than ``ln 100277``.

**Spike rule** (:func:`spike_steps`): step ``t`` is a spike in a series (the loss, or the grad norm) when its
value exceeds the median of the previous ``spike_window`` steps by more than ``spike_threshold`` robust standard
deviations (1.4826 · MAD, the median absolute deviation scaled to a normal's sigma) and by at least
``min_rise`` (10 %) of that median; the first ``min_history`` steps are never spikes. Median and MAD ignore the
earlier spikes themselves, and a steadily falling loss or a slowly drifting grad norm stays inside the band,
whose half-width grows with the drift over the window. The flip side: while the loss falls steeply (the first
few tens of steps of a smoke run) the band is wide, and a jump smaller than the window's spread goes unflagged.

The rule is checked at every step as training runs. At a spike, before the optimizer step, each window of the
batch is run again alone to get the gradient norm of its own loss, and the spike keeps the documents of every
window (:meth:`TokenDataset.documents_at`), largest window gradient first. That ranking matters: a
repeated-token loop (``m m m …``) has a *low* loss once the model predicts the repeat, yet it concentrates its
gradient on a few embedding rows and is what raises the batch's grad norm, so ordering by window loss would
list it last.

Determinism: for a seed, the window order (PCG64), the initialisation (``torch.manual_seed`` inside
``torch.random.fork_rng``, so the caller's global generator is left as it was) and the CPU kernels are fixed,
so two CPU runs with the same thread count give the same losses. CUDA kernels may differ in the last bits.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from curate.shards.dataset import TokenDataset

#: Scales a median absolute deviation to a normal distribution's standard deviation.
_MAD_TO_SIGMA = 1.4826
_SPARK = "▁▂▃▄▅▆▇█"


def spike_baseline(history: Sequence[float], *, threshold: float, min_rise: float) -> tuple[float, float]:
    """The median of ``history`` and the value above which the next step is a spike."""
    values = np.asarray(history, dtype=np.float64)
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median)))
    return median, median + max(threshold * _MAD_TO_SIGMA * mad, min_rise * abs(median))


def spike_steps(values: Sequence[float], *, threshold: float = 6.0, window: int = 50, min_history: int = 10,
                min_rise: float = 0.1) -> list[int]:
    """The steps of ``values`` that are spikes by the rule in this module's docstring."""
    values = list(values)
    found = []
    for step in range(max(min_history, 1), len(values)):
        _, limit = spike_baseline(values[max(0, step - window):step], threshold=threshold, min_rise=min_rise)
        if values[step] > limit:
            found.append(step)
    return found


class _Block(nn.Module):
    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_attn = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln_mlp = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.fc_out = nn.Linear(4 * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = self.qkv(self.ln_attn(x)).view(batch, length, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attended.transpose(1, 2).reshape(batch, length, width))
        return x + self.fc_out(F.gelu(self.fc(self.ln_mlp(x))))


class TinyGPT(nn.Module):
    """A GPT-2-shaped causal language model with an untied output head (see the module docstring)."""

    def __init__(self, vocab_size: int, seq_len: int, layers: int, d_model: int, heads: int) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not a multiple of heads {heads}")
        self.tokens = nn.Embedding(vocab_size, d_model)
        self.positions = nn.Embedding(seq_len, d_model)
        self.blocks = nn.ModuleList(_Block(d_model, heads) for _ in range(layers))
        self.ln_out = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tokens(ids) + self.positions(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_out(x))


@dataclass
class Spike:
    """One step whose loss or grad norm broke the spike rule, with the documents of its batch."""

    step: int
    loss: float
    grad_norm: float
    loss_baseline: float
    grad_norm_baseline: float
    signals: tuple[str, ...]  # "loss", "grad_norm"
    #: The largest window gradient over the median window gradient of the batch: well above 1 when one window
    #: (a document) causes the spike, near 1 when every window's gradient is high (the update before broke the
    #: model: an optimizer instability, not a document).
    concentration: float
    #: Every document of the batch: documents_at's dict plus its window's "window_loss" and "window_grad_norm"
    #: (the gradient norm of that window alone), largest window gradient first.
    documents: list[dict] = field(default_factory=list)


@dataclass
class SmokeResult:
    losses: list[float]
    grad_norms: list[float]
    spikes: list[Spike]
    first_loss: float  # mean of the first few steps
    last_loss: float  # mean of the last few steps
    device: str
    tokens_seen: int  # input tokens: steps · batch_size · seq_len
    seconds: float
    steps: int
    seq_len: int
    batch_size: int
    vocab_size: int  # distinct token ids in the windows trained on: the compacted vocabulary
    parameters: int
    average_over: int  # how many steps first_loss and last_loss average
    spike_rule: str

    def report(self, rows: int = 10, width: int = 60) -> str:
        """The run in a few lines: loss sparkline, a table of every k-th step, and each spike's documents."""
        lines = [
            (f"train-smoke on {self.device}: {self.steps} steps of {self.batch_size}x{self.seq_len} tokens "
             f"({self.tokens_seen:,} tokens) in {self.seconds:.1f} s ({self.tokens_seen / max(self.seconds, 1e-9):,.0f}"
             f" tokens/s); {self.parameters:,} parameters over a compacted vocabulary of {self.vocab_size:,} ids"),
            f"loss {self.first_loss:.3f} -> {self.last_loss:.3f} (mean of the first / last {self.average_over} steps)",
            f"loss  {_sparkline(self.losses, width)}",
            f"grad  {_sparkline(self.grad_norms, width)}",
            f"{'step':>6} {'loss':>8} {'grad norm':>10}",
        ]
        every = max(1, math.ceil(len(self.losses) / rows))
        shown = sorted(set(range(0, len(self.losses), every)) | {len(self.losses) - 1} if self.losses else set())
        lines += [f"{s:>6} {self.losses[s]:>8.3f} {self.grad_norms[s]:>10.3f}" for s in shown]
        lines.append(f"spikes: {len(self.spikes) or 'none'} ({self.spike_rule})")
        for spike in self.spikes:
            verdict = ("" if spike.concentration >= 2 or self.batch_size < 3 else
                       ": no window stands out, so the optimizer, not a document")
            lines.append(f"  step {spike.step} [{', '.join(spike.signals)}]: loss {spike.loss:.3f} (median "
                         f"{spike.loss_baseline:.3f}), grad norm {spike.grad_norm:.3f} (median "
                         f"{spike.grad_norm_baseline:.3f}); top window gradient {spike.concentration:.1f}x the "
                         f"batch's median{verdict}")
            for doc in spike.documents[:3]:
                lines.append(f"    window grad {doc['window_grad_norm']:.3f} loss {doc['window_loss']:.3f}  "
                             f"{doc['shard']}#{doc['index']}  "
                             f"id={doc.get('id')}  url={doc.get('url')}  ({doc['tokens_in_window']} tokens)")
            if len(spike.documents) > 3:
                lines.append(f"    … {len(spike.documents) - 3} more documents in the batch")
        return "\n".join(lines)


def _sparkline(values: Sequence[float], width: int) -> str:
    if not values:
        return ""
    columns = np.array_split(np.asarray(values, dtype=np.float64), min(width, len(values)))
    means = np.array([c.mean() for c in columns])
    low, high = means.min(), means.max()
    scale = (len(_SPARK) - 1) / (high - low) if high > low else 0.0
    return "".join(_SPARK[round((m - low) * scale)] for m in means) + f"  {low:.3g} .. {high:.3g}"


def _learning_rate(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _compact_vocabulary(dataset: TokenDataset, items: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """The sorted distinct token ids of the given windows."""
    ids = np.empty(0, dtype=np.int64)
    for first in range(0, len(items), chunk):
        tokens = np.concatenate([dataset[int(i)].numpy() for i in items[first:first + chunk]])
        ids = np.union1d(ids, tokens)
    return ids


def _window_losses(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Each window's mean next-token cross-entropy."""
    logits = model(batch[:, :-1])
    per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="none")
    return per_token.view(batch.shape[0], -1).mean(dim=1)


def _window_grad_norms(model: nn.Module, batch: torch.Tensor) -> list[float]:
    """The gradient norm of each window's own loss, one window at a time, leaving ``.grad`` untouched."""
    params = [p for p in model.parameters() if p.requires_grad]
    norms = []
    for window in batch:
        loss = _window_losses(model, window[None])[0]
        grads = torch.autograd.grad(loss, params)
        norms.append(torch.sqrt(sum((g.float() ** 2).sum() for g in grads)).item())
    return norms


def train_smoke(directory: str | os.PathLike, *, steps: int = 200, seq_len: int = 64, batch_size: int = 8,
                layers: int = 2, d_model: int = 128, heads: int = 4, lr: float = 3e-3, seed: int = 0,
                device: str | None = None, spike_threshold: float = 6.0, spike_window: int = 50,
                spike_min_history: int = 10, spike_min_rise: float = 0.1, grad_clip: float = 1.0,
                weight_decay: float = 0.1) -> SmokeResult:
    """Train a tiny GPT for ``steps`` steps on the shard set in ``directory``; see the module docstring.

    Step ``s`` reads items ``s·batch_size … s·batch_size + batch_size - 1`` (modulo the dataset's length: a run
    longer than one epoch starts the same shuffled order again) of ``TokenDataset(directory, seq_len, seed)``.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be at least 1")
    dataset = TokenDataset(directory, seq_len, seed=seed, shuffle=True)
    if len(dataset) == 0:
        raise ValueError(f"{dataset.directory}: {dataset.num_tokens} tokens is less than one window of "
                         f"{seq_len + 1}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    items = np.arange(steps * batch_size, dtype=np.int64) % len(dataset)
    started = time.perf_counter()
    vocab = _compact_vocabulary(dataset, np.unique(items))
    vocab_t = torch.from_numpy(vocab).to(device)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyGPT(len(vocab), seq_len, layers, d_model, heads)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)
    warmup = max(1, min(20, steps // 10))

    rule = {"threshold": spike_threshold, "min_rise": spike_min_rise}
    losses, grad_norms, spikes = [], [], []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, steps, lr, warmup)
        batch_items = items[step * batch_size:(step + 1) * batch_size]
        batch = torch.stack([dataset[int(i)] for i in batch_items]).to(device)
        batch = torch.searchsorted(vocab_t, batch)
        per_window = _window_losses(model, batch)
        loss = per_window.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        losses.append(loss.item())
        grad_norms.append(norm.item())
        if step >= max(spike_min_history, 1):
            history = slice(max(0, step - spike_window), step)
            loss_median, loss_limit = spike_baseline(losses[history], **rule)
            grad_median, grad_limit = spike_baseline(grad_norms[history], **rule)
            signals = tuple(name for name, value, limit in (("loss", losses[-1], loss_limit),
                                                              ("grad_norm", grad_norms[-1], grad_limit))
                            if value > limit)
            if signals:
                documents = []
                window_norms = _window_grad_norms(model, batch)  # before the step: the parameters of this batch
                for item, window_loss, window_norm in zip(batch_items, per_window.tolist(), window_norms, strict=True):
                    documents += [{**doc, "window_loss": window_loss, "window_grad_norm": window_norm}
                                  for doc in dataset.documents_at(int(item))]
                documents.sort(key=lambda doc: -doc["window_grad_norm"])
                spikes.append(Spike(step=step, loss=losses[-1], grad_norm=grad_norms[-1], loss_baseline=loss_median,
                                    grad_norm_baseline=grad_median, signals=signals,
                                    concentration=max(window_norms) / max(float(np.median(window_norms)), 1e-12),
                                    documents=documents))
        optimizer.step()
    seconds = time.perf_counter() - started

    average_over = max(1, min(10, steps // 10))
    return SmokeResult(
        losses=losses, grad_norms=grad_norms, spikes=spikes,
        first_loss=float(np.mean(losses[:average_over])), last_loss=float(np.mean(losses[-average_over:])),
        device=str(device), tokens_seen=steps * batch_size * seq_len, seconds=seconds, steps=steps,
        seq_len=seq_len, batch_size=batch_size, vocab_size=len(vocab),
        parameters=sum(p.numel() for p in model.parameters()), average_over=average_over,
        spike_rule=(f"a step is a spike when its loss or grad norm exceeds the median of the previous {spike_window} "
                    f"steps by {spike_threshold:g} x 1.4826 x MAD and by {spike_min_rise:.0%}; none before step "
                    f"{spike_min_history}"))
