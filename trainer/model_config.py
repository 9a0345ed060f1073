"""The model's settings and size presets, apart from the model so that reading them (the
command line's choices, a training config) does not import torch.

The defaults are the paper's STCA. What longseq adds is a named option, off by default,
listed with the paper's choice beside it in docs/TRAINER.md; EXTENSIONS turns all of them on.
"""

from __future__ import annotations

from dataclasses import dataclass

ARCHS = ("stca", "din", "transformer", "mean", "none")
FFNS = ("swiglu", "mlp")
MATCH_BY = ("id", "embedding")


@dataclass
class ModelConfig:
    arch: str = "stca"  # stca | din (one target-attention layer) | transformer | mean | none
    dim: int = 64  # D
    layers: int = 2  # STCA layers; transformer: self-attention blocks
    heads: int = 4  # H
    head_dim: int = 16  # K
    ffn_mult: int = 2  # SwiGLU hidden width = ffn_mult * D
    # The paper's parts, each switchable for its ablations (all on is the paper's model):
    ffn: str = "swiglu"  # feed-forward blocks: swiglu, or mlp (Linear-GELU-Linear, the ablation)
    time_delta: bool = True  # the history token's time-delta bucket embedding
    query_fusion: bool = True  # q(i+1) from [o(1)..o(i), x_t]; off: every layer queries with q(1)
    # Not described in the paper (ours): a learned key/value slot per head that every request can
    # attend to, so an empty history is defined. Off: a request attends only to its events, and
    # an empty history gives a zero summary.
    null_slot: bool = True
    # Extension, not in the paper (1: one hashed row per id, as usual): each id is the sum of
    # this many rows of its table, each under its own hash (hash embeddings, Svenstrup et al.
    # 2017). Two ids then share all their rows only if every hash collides, so long-tail ids
    # stay apart in tables much smaller than their vocabularies.
    hashes: int = 1
    item_buckets: int = 1 << 18  # hashed id vocabularies (row 0 unused)
    author_buckets: int = 1 << 16
    # Extension, not in the paper (off: plain softmax, as the paper): attention logits are
    # multiplied by log(n), n = the request's history length + 1 (scalable softmax); the
    # weight one relevant event can get otherwise falls like 1/n with length.
    length_scaled: bool = False
    # Extension, not in the paper (None: off, as the paper): an id-match attention prior. A
    # history event with the target's item or author gets w * log(n) added to its logit, w
    # learned per head and initialised to this value (1.0 in EXTENSIONS). It compares raw
    # ids, a channel the paper's model does not have.
    match_prior: float | None = None
    # What the prior matches on: "id", raw id equality (above); or "embedding", the cosine
    # similarity of the target's and the event's item (and author) embeddings, learned with
    # the model (a soft search, as SIM's; no raw-id channel). Only with match_prior set.
    match_by: str = "id"
    # Extension, not in the paper (None: off): query-key normalisation with a learned
    # temperature (Henry et al. 2020). Logits are g * cos(q, k), g learned per head and
    # initialised to this value: a softmax over 10k keys can then be sharp from the start,
    # where the paper's q.k / sqrt(K) starts near uniform.
    qk_norm: float | None = None

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; choose one of {', '.join(ARCHS)}")
        if self.match_by not in MATCH_BY:
            raise ValueError(f"unknown match_by {self.match_by!r}; choose one of {', '.join(MATCH_BY)}")
        if self.hashes < 1:
            raise ValueError(f"hashes must be >= 1, got {self.hashes}")
        if self.ffn not in FFNS:
            raise ValueError(f"unknown ffn {self.ffn!r}; choose one of {', '.join(FFNS)}")


# longseq's extensions to the paper, all on: model overrides for a TrainConfig or a preset
EXTENSIONS: dict[str, object] = {"length_scaled": True, "match_prior": 1.0}
# the learned form of the prior: embedding similarity instead of raw id equality
EMBEDDING_MATCH: dict[str, object] = {"match_prior": 1.0, "match_by": "embedding"}

DEFAULT_PRESET = "small"
PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(dim=32, layers=2, heads=2, head_dim=16, item_buckets=1 << 14, author_buckets=1 << 12),
    "small": ModelConfig(dim=64, layers=2, heads=4, head_dim=16),
    # the paper's production size: 4 layers, 16 heads of 64, model dim 1024
    "paper": ModelConfig(dim=1024, layers=4, heads=16, head_dim=64, ffn_mult=4, item_buckets=1 << 22,
                         author_buckets=1 << 20),
}
