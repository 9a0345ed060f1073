"""STCA (Stacked Target-to-History Cross Attention) and its baselines, in one file.

Shapes in comments: B requests in the batch, N history tokens (all requests, jagged),
T targets (jagged), D model dim, H heads, K head dim, L the longest history in the batch,
M the most targets of any request.

The history path runs on the N real tokens, once per request, and is shared by that
request's targets (request level batching). Only attention pads, to the batch's L, and
a mask confines each target to its own request's history. Each request's history also
gets one learned "null" slot, so a request with no history still attends to something.
Nothing ties the model to a trained length: no position table (recency comes from the
time-delta bucket), so a model trained on 2k-event suffixes can score 10k histories.

The dataset spec (schemas/spec.py) sets the tasks (the action table's rows, one logit per
task) and the side features, which are added to the history token and the target embedding
as item and author are (FeatureEmbedding). The default spec has no features: its model is
the one from before specs, parameter for parameter and draw for draw.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from longseq.features.actions import NUM_ACTIONS, num_actions
from longseq.features.hashing import hash_ids, name_salt
from longseq.features.time_buckets import NUM_TIME_BUCKETS, time_delta_bucket
from longseq.schemas.contracts import DEFAULT_SPEC
from longseq.schemas.spec import SIDES, DatasetSpec, Feature
from longseq.reader.batch import Jagged, RequestBatch
from longseq.trainer.model_config import ModelConfig

# ---------------------------------------------------------------- batch layout

# A length bucket's fixed cost (its own kernel calls, forward and backward) in padded keys:
# requests are split into more buckets only while that saves more padding than this.
BUCKET_KEYS = 1024
# The history path (FFN, LayerNorm, K/V projection) of a CPU batch runs in chunks of requests
# whose FFN activation ([n, ffn_mult * D] float32) is about this many bytes: a chunk's
# activations then stay in the last-level cache from one pass to the next, instead of each
# elementwise pass going through memory (`longseq bench train-floor --chunk-mib` compares sizes).
HIST_CHUNK_BYTES = 2 << 20


def length_buckets(lengths: np.ndarray, fixed: int | None = None) -> list[np.ndarray]:
    """Requests grouped so that padding each group to its own longest history costs least:
    sorted by length, then cut where sum(group size x (1 + its longest)) + fixed per group is
    smallest (dynamic programming over the sorted lengths; the 1 is the null slot). `fixed`:
    BUCKET_KEYS unless given."""
    fixed = BUCKET_KEYS if fixed is None else fixed
    order = np.argsort(lengths, kind="stable")
    keys = lengths[order] + 1
    best, cut = np.zeros(len(keys) + 1), np.zeros(len(keys) + 1, dtype=np.int64)
    for j in range(1, len(keys) + 1):  # best[j]: the first j sorted requests; the last group is [i, j)
        cost = best[:j] + (j - np.arange(j)) * keys[j - 1] + fixed
        cut[j] = int(np.argmin(cost))
        best[j] = cost[cut[j]]
    groups, j = [], len(keys)
    while j > 0:
        groups.append(order[cut[j]:j])
        j = int(cut[j])
    return groups[::-1]


def history_chunks(lengths: list[int], tokens: int) -> tuple[list[int], list[int]]:
    """Consecutive requests cut into chunks of the history path, each of at least `tokens`
    events but the last: how many requests, and how many events, each chunk holds."""
    requests, events, n, size = [], [], 0, 0
    for length in lengths:
        n, size = n + 1, size + length
        if size >= tokens:
            requests.append(n)
            events.append(size)
            n = size = 0
    return (requests + [n], events + [size]) if n else (requests, events)


def positions(seg: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:  # [n] -> [n]
    """Each jagged value's position within its request, from its request (seg) and the offsets."""
    return torch.arange(len(seg), device=seg.device) - offsets[seg]


@dataclass(frozen=True)
class Bucket:
    """Requests that attention pads together: to the bucket's longest history L and most
    targets M. On the CPU, requests of similar length (length_buckets), so that little is
    padded; on other devices the whole batch, padded by device-side indices (no host sync)."""

    requests: tuple[int, ...] | None  # the batch's requests in this bucket, in order; None: all
    B: int
    L: int
    M: int
    hist_mask: torch.Tensor  # [B, L] True where a real event is
    log_n: torch.Tensor  # [B] log(history length + 1): the null slot counts
    full: bool = False  # every request has L events (known on the host): nothing is padded

    def attention_mask(self, null_slot: bool) -> torch.Tensor | None:  # [B, 1, 1, 1+L]
        """Slot 0 is the null slot: always open when learned; else open only for empty histories.
        None where every slot is open (SDPA is faster without a mask)."""
        if null_slot and self.full:
            return None
        if null_slot:
            null_open = torch.ones(self.B, 1, dtype=torch.bool, device=self.hist_mask.device)
        else:
            null_open = ~self.hist_mask.any(1, keepdim=True)
        return torch.cat([null_open, self.hist_mask], 1)[:, None, None, :]


@dataclass(frozen=True)
class BatchIds:
    """The (item, author) id vectors of a batch's history events ([N, D] each) and targets ([T, D])."""

    history: tuple[torch.Tensor, torch.Tensor]
    target: tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Layout:
    """Where each flat token and target sits in the padded [B, L] / [B, M] views and in the
    attention's length buckets, and what the model's attention needs of the batch beyond that
    (the id-match prior, the flex kernel's block mask): built once per batch, before the
    layers, and never changed."""

    hist_seg: torch.Tensor  # [N] request of each history token
    hist_offsets: torch.Tensor  # [B + 1]
    tgt_seg: torch.Tensor  # [T]
    tgt_pos: torch.Tensor  # [T]
    B: int
    L: int
    M: int
    log_n: torch.Tensor  # [B] log(history length + 1): the null slot counts
    buckets: tuple[Bucket, ...]  # what attention pads together
    # each request's history and target counts, on the host: how a CPU batch's flat tensors
    # split into requests for its buckets (None: one bucket of the whole batch)
    lengths: tuple[list[int], list[int]] | None = None
    # with lengths: how many requests, and how many history events, each chunk of the history
    # path takes (history_chunks)
    chunks: tuple[list[int], list[int]] | None = None
    # per bucket, [Bb, 2, Mb, 1+Lb] log(n) where target m and history event l share the item (0) /
    # the author (1), else 0; slot 0 is the null slot. Built once per batch, weighted per head by each layer.
    match_log_n: list[torch.Tensor] | None = None
    # the flex kernel's id-match prior: raw (item, author) ids of the T targets and N events
    match_ids: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    block_mask: Any = None  # the flex kernel's BlockMask (flex_block_mask), shared by every layer
    ids: BatchIds | None = None  # the batch's id vectors, looked up once for every use (TokenEmbedding.batch_ids)

    @staticmethod
    def of(batch: RequestBatch, bucketed: bool = True, chunk_tokens: int | None = None) -> "Layout":
        """The batch's layout. A CPU batch (its offsets on the host) is cut into length buckets
        unless `bucketed` is False, and into chunks of requests of at least `chunk_tokens` history
        events for the history path (None: one chunk); any other batch is one bucket, its shapes
        from the batch's host-side sizes: nothing is read back from the device."""
        hist_seg, tgt_seg = batch.history.segment_ids(), batch.targets.segment_ids()
        tgt_pos = positions(tgt_seg, batch.targets.offsets)
        B, L, M = batch.num_requests, batch.history.max_length, batch.targets.max_length
        lengths = batch.history.lengths()
        log_n = torch.log1p(lengths.float())
        layout = Layout(hist_seg, batch.history.offsets, tgt_seg, tgt_pos, B, L, M, log_n, ())
        # under torch.compile too: buckets are host-side Python, shaped anew by every batch
        if not bucketed or lengths.device.type != "cpu" or B < 2 or torch.compiler.is_compiling():
            return dataclasses.replace(layout, buckets=(Bucket(None, B, L, M, layout.hist_mask, log_n),))
        hist_len, tgt_len = lengths.numpy(), batch.targets.lengths().numpy()
        buckets = []
        for group in length_buckets(hist_len):
            Lb, rows = int(hist_len[group].max()), torch.from_numpy(group)
            buckets.append(Bucket(tuple(group.tolist()), len(group), Lb, int(tgt_len[group].max()),
                                  torch.arange(Lb)[None, :] < lengths[rows, None], log_n[rows],
                                  full=bool((hist_len[group] == Lb).all())))
        hist_lengths = hist_len.tolist()
        return dataclasses.replace(layout, buckets=tuple(buckets), lengths=(hist_lengths, tgt_len.tolist()),
                                   chunks=history_chunks(hist_lengths, chunk_tokens or max(sum(hist_lengths), 1)))

    # The whole batch padded to its longest history: what the GPU's attention, the flex kernel's
    # mask and the Transformer baseline read. Computed when first read (a CPU STCA step reads
    # neither, and at 256 requests of 10k events they cost more than its buckets).
    @functools.cached_property
    def hist_pos(self) -> torch.Tensor:  # [N] each history token's position within its request
        return positions(self.hist_seg, self.hist_offsets)

    @functools.cached_property
    def hist_mask(self) -> torch.Tensor:  # [B, L] True where a real token is
        lengths = self.hist_offsets[1:] - self.hist_offsets[:-1]
        return torch.arange(self.L, device=lengths.device)[None, :] < lengths[:, None]

    def flex_block_mask(self, null_always_open: bool):
        """FlexAttention's mask over [T targets] x [B null slots, then the N events]: a target
        sees its own request's events and null slot (the null slot always, or only when the
        history is empty)."""
        from torch.nn.attention.flex_attention import create_block_mask

        B, tgt_seg = self.B, self.tgt_seg
        kv_seg = torch.cat([torch.arange(B, device=tgt_seg.device), self.hist_seg])  # [B + N]
        null_open = torch.ones(B, dtype=torch.bool, device=tgt_seg.device) if null_always_open \
            else ~self.hist_mask.any(1)

        def mask_mod(b, h, q, kv):
            return (tgt_seg[q] == kv_seg[kv]) & ((kv >= B) | null_open[tgt_seg[q]])

        return create_block_mask(mask_mod, None, None, len(tgt_seg), len(kv_seg), device=tgt_seg.device)

    def pad_history(self, x: torch.Tensor) -> torch.Tensor:  # [N, ...] -> [B, L, ...]
        out = x.new_zeros(self.B, self.L, *x.shape[1:])
        out[self.hist_seg, self.hist_pos] = x
        return out

    def pad_targets(self, x: torch.Tensor) -> torch.Tensor:  # [T, ...] -> [B, M, ...]
        out = x.new_zeros(self.B, self.M, *x.shape[1:])
        out[self.tgt_seg, self.tgt_pos] = x
        return out

    def bucket_history(self, x: torch.Tensor, null: torch.Tensor | None = None) -> list[torch.Tensor]:
        """[N, ...] -> per bucket [Bb, Lb, ...], zero where padded; with `null` ([...]) each row
        starts with it: [Bb, 1+Lb, ...]. A bucket is one cat of its requests' rows (views of x)
        and their padding: no [B, L] buffer is zeroed, and the backward is one split of x."""
        if self.lengths is None:
            out = self.pad_history(x)
            return [out if null is None else torch.cat([null.to(x.dtype).expand(self.B, 1, *null.shape), out], 1)]
        return self.bucket_rows(x.split(self.lengths[0]), null)

    def bucket_rows(self, rows: Sequence[torch.Tensor], null: torch.Tensor | None = None) -> list[torch.Tensor]:
        """bucket_history of a CPU batch from each request's rows ([n_r, ...] each, in order)."""
        x, lengths = rows[0], self.lengths[0]
        zero = x.new_zeros(1, *x.shape[1:])
        head = [] if null is None else [null.to(x.dtype)[None]]
        return [self._cat(rows, lengths, b, b.L, zero, head) for b in self.buckets]

    def rows_in_chunks(self, x: torch.Tensor, path: Callable[[torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
        """path over [N, ...] chunk by chunk (the chunks), as each request's rows of its output."""
        (requests, events), lengths = self.chunks, self.lengths[0]
        rows, r = [], 0
        for n, xc in zip(requests, x.split(events)):
            rows += path(xc).split(lengths[r:r + n])
            r += n
        return rows

    def bucket_targets(self, x: torch.Tensor) -> list[torch.Tensor]:  # [T, ...] -> per bucket [Bb, Mb, ...]
        if self.lengths is None:
            return [self.pad_targets(x)]
        lengths = self.lengths[1]
        rows, zero = x.split(lengths), x.new_zeros(1, *x.shape[1:])
        return [self._cat(rows, lengths, b, b.M, zero, []) for b in self.buckets]

    @staticmethod
    def _cat(rows: tuple[torch.Tensor, ...], lengths: list[int], bucket: Bucket, width: int, zero: torch.Tensor,
             head: list[torch.Tensor]) -> torch.Tensor:  # -> [Bb, len(head) + width, ...]
        parts = []
        for r in bucket.requests:
            parts += [*head, rows[r]] + ([zero.expand(width - lengths[r], *zero.shape[1:])] if width > lengths[r] else [])
        return torch.cat(parts).view(bucket.B, len(head) + width, *zero.shape[1:])

    def unbucket_targets(self, outs: list[torch.Tensor]) -> torch.Tensor:  # per bucket [Bb, Mb, ...] -> [T, ...]
        if self.lengths is None:
            return outs[0][self.tgt_seg, self.tgt_pos]
        lengths, rows = self.lengths[1], {}
        for b, out in zip(self.buckets, outs):
            sizes = [s for r in b.requests for s in (lengths[r], b.M - lengths[r])]
            pieces = out.reshape(b.B * b.M, *out.shape[2:]).split(sizes)
            rows.update(zip(b.requests, pieces[::2]))  # each request's real targets
        return torch.cat([rows[r] for r in range(self.B)])


# ---------------------------------------------------------------- blocks


class SwiGLU(nn.Module):
    """(silu(x W1) * x W3) W2."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int):
        super().__init__()
        self.w1 = nn.Linear(d_in, d_hidden, bias=False)
        self.w3 = nn.Linear(d_in, d_hidden, bias=False)
        self.w2 = nn.Linear(d_hidden, d_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():  # scoring: in place, the same numbers, two [n, hidden] passes fewer
            return self.w2(F.silu(self.w1(x), inplace=True).mul_(self.w3(x)))
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class RowsOf(torch.autograd.Function):
    """An embedding lookup whose backward is index_add_ into a zeroed table: on the CPU about
    2.5x as fast as embedding_dense_backward, the same sums."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:  # [V, D], [n] -> [n, D]
        ctx.save_for_backward(rows)
        ctx.shape = weight.shape
        return weight.index_select(0, rows)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (rows,) = ctx.saved_tensors
        return grad.new_zeros(ctx.shape).index_add_(0, rows, grad), None


def lookup(table: nn.Embedding, rows: torch.Tensor) -> torch.Tensor:  # [n] -> [n, D]
    """table(rows); on the CPU with a dense gradient, by RowsOf."""
    if table.sparse or rows.device.type != "cpu" or rows.dim() != 1:
        return table(rows)
    return RowsOf.apply(table.weight, rows)


class MLP(nn.Module):
    """gelu(x W1) W2: the plain feed-forward block of the paper's SwiGLU ablation."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int):
        super().__init__()
        self.w1 = nn.Linear(d_in, d_hidden, bias=False)
        self.w2 = nn.Linear(d_hidden, d_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.gelu(self.w1(x)))


def feed_forward(cfg: ModelConfig, d_in: int, d_out: int) -> nn.Module:
    """The model's feed-forward block (cfg.ffn), ffn_mult * D wide."""
    return (SwiGLU if cfg.ffn == "swiglu" else MLP)(d_in, cfg.ffn_mult * cfg.dim, d_out)


class TokenEmbedding(nn.Module):
    """History token: item + author + action flags + time delta bucket. Target: item + author."""

    def __init__(self, cfg: ModelConfig, actions: int = NUM_ACTIONS):
        super().__init__()
        self.cfg = cfg
        self.item = nn.Embedding(cfg.item_buckets, cfg.dim)
        self.author = nn.Embedding(cfg.author_buckets, cfg.dim)
        self.action = nn.Embedding(actions, cfg.dim)  # one row per combination of the tasks' bits
        self.delta = nn.Embedding(NUM_TIME_BUCKETS, cfg.dim) if cfg.time_delta else None
        for table in (self.item, self.author, self.action, self.delta):
            if table is not None:
                nn.init.normal_(table.weight, std=0.02)

    def id_vectors(self, item: torch.Tensor, author: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # 2 x [n, D]
        # hash k (k > 0: cfg.hashes) uses salts 1 + 2k (items) and 2 + 2k (authors)
        def hashed(table: nn.Embedding, ids: torch.Tensor, salt: int) -> torch.Tensor:
            # reduce, not sum(): sum's start 0 + the first lookup would copy an [n, D] tensor for nothing
            return functools.reduce(torch.add, (lookup(table, hash_ids(ids, table.num_embeddings, salt=salt + 2 * i))
                                                for i in range(self.cfg.hashes)))

        return hashed(self.item, item, 1), hashed(self.author, author, 2)

    def ids(self, item: torch.Tensor, author: torch.Tensor) -> torch.Tensor:  # [n, D]
        item_vec, author_vec = self.id_vectors(item, author)
        return item_vec + author_vec

    def batch_ids(self, batch: RequestBatch) -> BatchIds:
        """The id vectors of the history events and the targets, from one lookup per table:
        each table then gets one dense gradient a step, not one per side summed."""
        h, t = batch.history, batch.targets
        if self.item.sparse:  # row-sparse gradients (rowwise_adagrad) cost by the rows looked up: nothing to save
            return BatchIds(self.id_vectors(h["item_id"], h["author_id"]), self.id_vectors(t["item_id"], t["author_id"]))
        item, author = self.id_vectors(torch.cat([h["item_id"], t["item_id"]]), torch.cat([h["author_id"], t["author_id"]]))
        sizes = [h.total, t.total]
        (h_item, t_item), (h_author, t_author) = item.split(sizes), author.split(sizes)  # split: no zeroed gradients
        return BatchIds((h_item, h_author), (t_item, t_author))

    def history(self, batch: RequestBatch, layout: Layout) -> torch.Tensor:  # [N, D]
        h = batch.history
        item, author = layout.ids.history if layout.ids is not None else self.id_vectors(h["item_id"], h["author_id"])
        x = item + author + lookup(self.action, h["action"].long())
        if self.delta is None:
            return x
        return x + lookup(self.delta, time_delta_bucket(batch.request_ts[layout.hist_seg] - h["event_ts"]))

    def target(self, batch: RequestBatch, layout: Layout | None = None) -> torch.Tensor:  # [T, D]
        if layout is not None and layout.ids is not None:
            item, author = layout.ids.target
            return item + author
        return self.ids(batch.targets["item_id"], batch.targets["author_id"])


def feature_salt(name: str) -> int:
    """The hash salt of a categorical feature, from its name: 2**32 and above, apart from the
    id tables' salts 1, 2, ... (TokenEmbedding.id_vectors), so that its ids scatter on their own."""
    return (1 << 32) + name_salt(name)


class FeatureEmbedding(nn.Module):
    """The spec's side features of history events or targets as one [n, D] vector each, to
    add to their token embeddings (docs/SPEC.md):

    - embedded features (categorical ids hashed into f.buckets rows, numbers bucketized by
      f.boundaries into len + 1 rows): one table each, shared by history and target;
    - the other numbers (normalize, log) of a side: stacked into [n, F] and projected by
      one Linear per side.
    """

    def __init__(self, spec: DatasetSpec, dim: int):
        super().__init__()
        self.spec = spec
        self.tables = nn.ModuleDict({f.name: nn.Embedding(f.table_rows, dim) for f in spec.features if f.embedded})
        for table in self.tables.values():
            nn.init.normal_(table.weight, std=0.02)
        self.numeric = {side: tuple(f for f in spec.features_on(side) if not f.embedded) for side in SIDES}
        self.project = nn.ModuleDict({side: nn.Linear(len(fs), dim) for side, fs in self.numeric.items() if fs})
        # each bucketized feature's boundaries, on the model's device (no copy per batch); from
        # the spec, so not saved with the weights
        for f in spec.features:
            if f.kind == "numeric" and f.transform == "bucketize":
                self.register_buffer(f"boundaries_{f.name}", torch.tensor(f.boundaries, dtype=torch.float64),
                                     persistent=False)

    def rows(self, f: Feature, values: torch.Tensor) -> torch.Tensor:  # [n] -> [n] row of f's table
        if f.kind == "categorical":
            return hash_ids(values, f.buckets, salt=feature_salt(f.name))
        # compared in float64, as the spec's boundaries are; a value equal to a boundary goes to
        # the bucket above it: bucket i holds [b[i-1], b[i])
        boundaries = getattr(self, f"boundaries_{f.name}").double()
        return torch.bucketize(values.double(), boundaries, right=True)

    @staticmethod
    def number(f: Feature, values: torch.Tensor) -> torch.Tensor:  # [n] float32 -> [n] transformed
        if f.transform == "log":
            return torch.log1p(values.float().clamp_min(0))
        return (values.float() - f.mean) / f.std

    def forward(self, side: str, values: dict[str, torch.Tensor]) -> torch.Tensor | None:  # [n, D], None: none
        out = None
        for f in self.spec.features_on(side):
            if f.embedded:
                vec = self.tables[f.name](self.rows(f, values[f.name]))  # [n, D]
                out = vec if out is None else out + vec
        if side in self.project:
            numbers = torch.stack([self.number(f, values[f.name]) for f in self.numeric[side]], dim=-1)  # [n, F]
            vec = self.project[side](numbers.to(self.project[side].weight.dtype))  # [n, D]
            out = vec if out is None else out + vec
        return out


class TargetAttention(nn.Module):
    """Multi-head attention from each target's query to its own request's history (plus a
    learned null slot): softmax over L, so the cost is linear in history length.

    Two kernels compute it, chosen at construction (KERNELS, `target_attention`):
    PaddedTargetAttention (SDPA over [B, H, M, 1+L]: the reference, and the CPU's) and
    FlexTargetAttention (jagged FlexAttention: no padding; backward on CUDA only). They share
    these weights and the query and key scalings (`scaled`)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.H, self.K, self.null_slot = cfg.heads, cfg.head_dim, cfg.null_slot
        self.wq = nn.Linear(cfg.dim, cfg.heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.heads * cfg.head_dim, cfg.dim, bias=False)
        # learned null key/value (cfg.null_slot), or a fixed zero one that only empty histories see
        null = torch.zeros(2, cfg.heads, cfg.head_dim)
        if cfg.null_slot:
            self.null_kv = nn.Parameter(null)
        else:
            self.register_buffer("null_kv", null, persistent=False)
        # per-head content scale s: logits = log(n) * s * q.k / sqrt(K), plain softmax at n = 1024 initially
        self.length_scale = nn.Parameter(torch.full((cfg.heads,), 1 / math.log(1024))) if cfg.length_scaled else None
        self.match_weight = nn.Parameter(torch.full((2, cfg.heads), cfg.match_prior)) if cfg.match_prior is not None else None
        self.qk_scale = nn.Parameter(torch.full((cfg.heads,), cfg.qk_norm)) if cfg.qk_norm is not None else None

    def scaled(self, Q: torch.Tensor, keys: torch.Tensor, log_n: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, float | None]:
        """Queries and keys with the optional scalings applied, and the softmax scale to use.
        Q: [S, H, ...]: heads on dim 1, in either kernel's layout; log_n: [S], each query's
        log(history length + 1). None: SDPA's default 1 / sqrt(K)."""
        def per_head(w: torch.Tensor) -> torch.Tensor:  # [H] -> [1, H, 1, ...] against Q
            return w.view(1, -1, *[1] * (Q.dim() - 2))

        scale = None
        if self.qk_scale is not None:  # g * cos(q, k): unit queries and keys, the learned g in the query
            Q = F.normalize(Q, dim=-1) * per_head(self.qk_scale).to(Q.dtype)
            keys, scale = F.normalize(keys, dim=-1), 1.0
        if self.length_scale is not None:
            Q = Q * (per_head(self.length_scale) * log_n.view(-1, *[1] * (Q.dim() - 1))).to(Q.dtype)
        return Q, keys, scale

    def forward(self, q: torch.Tensor, hist: torch.Tensor, layout: Layout,
                path: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """q: [T, D] one query per target; hist: [N, D] -> [T, D]. With `path`, the keys and
        values are read from path(hist): the layer's history path, which a kernel may run in chunks."""
        raise NotImplementedError


class PaddedTargetAttention(TargetAttention):
    """Target attention by SDPA over each request's history padded to its bucket's L (the
    layout's length buckets on the CPU; the batch's L elsewhere)."""

    def forward(self, q: torch.Tensor, hist: torch.Tensor, layout: Layout,
                path: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        H, K = self.H, self.K
        Q = self.wq(q).view(-1, H, K)  # [T, H, K]
        w_kv = torch.cat([self.wk.weight, self.wv.weight])

        def keys_values(x: torch.Tensor) -> torch.Tensor:  # [n, D] -> [n, 2, H, K]: keys and values in one pass
            return F.linear(x if path is None else path(x), w_kv).view(-1, 2, H, K)

        if layout.chunks is not None and path is not None:  # the history path and K/V chunk by chunk
            kv_buckets = layout.bucket_rows(layout.rows_in_chunks(hist, keys_values), self.null_kv)
        else:
            kv_buckets = layout.bucket_history(keys_values(hist), self.null_kv)
        priors = layout.match_log_n if self.match_weight is not None and layout.match_log_n is not None \
            else [None] * len(layout.buckets)
        outs = []
        for bucket, Qb, kvb, prior in zip(layout.buckets, layout.bucket_targets(Q), kv_buckets, priors):
            Qb = Qb.transpose(1, 2)  # [Bb, H, Mb, K]
            keys, values = (t.transpose(1, 2) for t in kvb.unbind(2))  # [Bb, H, 1+Lb, K], slot 0 the null slot
            outs.append(self.attend(Qb, keys, values, bucket, prior).transpose(1, 2))  # [Bb, Mb, H, K]
        return self.wo(layout.unbucket_targets(outs).reshape(-1, H * K))  # [T, D]

    def attend(self, Q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bucket: Bucket,
               prior: torch.Tensor | None) -> torch.Tensor:  # -> [Bb, H, Mb, K]
        if bucket.M == 0:  # no query: nothing to attend (SDPA takes no empty batch of queries)
            return Q.new_zeros(Q.shape)
        mask = bucket.attention_mask(self.null_slot)  # [Bb, 1, 1, 1+Lb]
        Q, keys, scale = self.scaled(Q, keys, bucket.log_n)
        if prior is not None:
            # two fused multiply-adds over [Bb, H, Mb, 1+Lb]: this bias is the prior's whole cost
            w = self.match_weight[:, None, :, None, None]  # [2, 1, H, 1, 1]
            prior = prior.to(w.dtype)  # [Bb, 2, Mb, 1+Lb]
            padding = torch.zeros(Q.shape[0], 1, 1, keys.shape[2], dtype=w.dtype, device=w.device)
            if mask is not None:
                padding.masked_fill_(~mask, float("-inf"))
            bias = torch.addcmul(padding, prior[:, :1], w[0])
            mask = torch.addcmul(bias, prior[:, 1:], w[1]).to(Q.dtype)  # [Bb, H, Mb, 1+Lb]
        return F.scaled_dot_product_attention(Q, keys, values, attn_mask=mask, scale=scale)


class FlexTargetAttention(TargetAttention):
    """Target attention without padding or a dense bias: FlexAttention over the T targets and
    the B null slots + N events, with the layout's block mask from the offsets and the
    id-match prior as a score_mod computed on the fly."""

    def forward(self, q: torch.Tensor, hist: torch.Tensor, layout: Layout,
                path: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        B, H, K = layout.B, self.H, self.K
        hist = hist if path is None else path(hist)
        Q = self.wq(q).view(-1, H, K)  # [T, H, K]
        null = self.null_kv.to(Q.dtype)  # [2, H, K]
        keys = torch.cat([null[0].expand(B, H, K), self.wk(hist).view(-1, H, K)])  # [B + N, H, K]
        values = torch.cat([null[1].expand(B, H, K), self.wv(hist).view(-1, H, K)])
        log_n = layout.log_n[layout.tgt_seg]  # [T]: each target's request
        Q, keys, scale = self.scaled(Q, keys, log_n)
        score_mod = None
        if self.match_weight is not None and layout.match_ids is not None:
            t_item, t_author, h_item, h_author = layout.match_ids
            w = self.match_weight  # [2, H]

            def match_bonus(score, b, h, t, kv):
                event = (kv - B).clamp(min=0)  # the null slots (kv < B) never match
                bonus = w[0, h] * (t_item[t] == h_item[event]) + w[1, h] * (t_author[t] == h_author[event])
                return score + torch.where(kv >= B, bonus * log_n[t], 0.0)

            score_mod = match_bonus

        def heads_first(x: torch.Tensor) -> torch.Tensor:  # [S, H, K] -> [1, H, S, K]
            return x.transpose(0, 1)[None]

        out = flex_kernel(Q.device.type)(heads_first(Q), heads_first(keys), heads_first(values), score_mod=score_mod,
                                         block_mask=layout.block_mask, scale=scale)  # [1, H, T, K]
        return self.wo(out[0].transpose(0, 1).reshape(-1, H * K))  # [T, D]


KERNELS: dict[str, type[TargetAttention]] = {"padded": PaddedTargetAttention, "flex": FlexTargetAttention}


def target_attention(cfg: ModelConfig, kernel: str = "padded") -> TargetAttention:
    return KERNELS[kernel](cfg)


def check_kernel(cfg: ModelConfig, kernel: str) -> None:
    """ValueError unless `kernel` can run this model: the embedding-match prior needs a
    dense bias, so the padded kernel."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown attention kernel {kernel!r}; use padded or flex")
    if kernel == "flex" and cfg.match_prior is not None and cfg.match_by != "id":
        raise ValueError("the embedding-match prior needs the padded kernel (a dense [B, H, M, 1+L] bias)")


@functools.lru_cache(maxsize=None)
def flex_kernel(device_type: str):
    """FlexAttention: compiled into fused kernels on CUDA; eager elsewhere (it materialises the
    scores there, and has no backward: the CPU trains with the padded kernel)."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=True) if device_type == "cuda" else flex_attention


class StcaLayer(nn.Module):
    """One layer: the history path LN(SwiGLU_i(X)), then cross attention from the query."""

    def __init__(self, cfg: ModelConfig, kernel: str = "padded"):
        super().__init__()
        self.hist_ffn = feed_forward(cfg, cfg.dim, cfg.dim)
        self.hist_norm = nn.LayerNorm(cfg.dim)
        self.attn = target_attention(cfg, kernel)

    def forward(self, q: torch.Tensor, x: torch.Tensor, layout: Layout) -> torch.Tensor:
        # the history path LN(SwiGLU(x)): per request, not per target; the kernel runs it
        return self.attn(q, x, layout, path=self.history_path)  # [T, D]

    def history_path(self, x: torch.Tensor) -> torch.Tensor:  # [n, D] -> [n, D]
        return self.hist_norm(self.hist_ffn(x))


class SelfAttentionBlock(nn.Module):
    """Pre-LN Transformer block over one request's history (quadratic in L): the baseline."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.H, self.K = cfg.heads, cfg.head_dim
        self.norm1, self.norm2 = nn.LayerNorm(cfg.dim), nn.LayerNorm(cfg.dim)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.heads * cfg.head_dim, cfg.dim, bias=False)
        self.ffn = feed_forward(cfg, cfg.dim, cfg.dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: [B, S, D] padded (slot 0 is the null token); mask: [B, S] real slots
        B, S, _ = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, S, 3, self.H, self.K).permute(2, 0, 3, 1, 4)  # 3 x [B, H, S, K]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        x = x + self.wo(a.transpose(1, 2).reshape(B, S, -1))
        return x + self.ffn(self.norm2(x))


# ---------------------------------------------------------------- models


class RankingModel(nn.Module):
    """Embeddings -> a history summary per target -> one logit per task of the spec.

    One subclass per arch (ARCH_MODELS; `make_model` picks it from cfg.arch) adds its history
    path (`_build`, in the order its weights are drawn) and its summaries of the history for
    each target (`summaries`); the rest is shared. The attention kernel is chosen here, at
    construction, for every TargetAttention of the model."""

    attends = True  # whether the arch has target attention (the match prior and the block mask are for it)
    reads_history = True  # whether the arch embeds the history (else only the targets' ids are looked up)

    def __init__(self, cfg: ModelConfig, spec: DatasetSpec = DEFAULT_SPEC, kernel: str = "padded"):
        super().__init__()
        check_kernel(cfg, kernel)
        self.cfg, self.spec, self.kernel = cfg, spec, kernel
        # CPU batches: attention pads each length bucket to its own longest history (False: the
        # whole batch to its longest, as on other devices; the same numbers either way)
        self.length_buckets = True
        # CPU batches: the history path runs in chunks of this many bytes of FFN activation
        # (HIST_CHUNK_BYTES; 0: the whole batch at once; the same numbers either way)
        self.chunk_bytes = HIST_CHUNK_BYTES
        D = cfg.dim
        self.embed = TokenEmbedding(cfg, num_actions(spec.tasks))
        n_summaries = self._build(cfg, kernel)
        self.output = feed_forward(cfg, (n_summaries + 1) * D, D)  # z = SwiGLU([o(1)..o(M), x_t] W_Z)
        self.heads = nn.Linear(D, len(spec.tasks))
        # built last, and only for a spec with features: the default spec's model (no features)
        # draws its initial weights as it did before specs existed
        self.features = FeatureEmbedding(spec, D) if spec.features else None

    def _build(self, cfg: ModelConfig, kernel: str) -> int:
        """Add the arch's history path; returns how many summaries it gives each target."""
        raise NotImplementedError

    def summaries(self, batch: RequestBatch, layout: Layout, x_t: torch.Tensor) -> list[torch.Tensor]:
        """The arch's [T, D] summaries of each target's history."""
        raise NotImplementedError

    def forward(self, batch: RequestBatch) -> torch.Tensor:  # [T, len(spec.tasks)] logits
        layout = self.layout(batch)
        x_t = self.target_tokens(batch, layout)  # [T, D]
        z = self.output(torch.cat([*self.summaries(batch, layout, x_t), x_t], dim=-1))  # [T, D]
        return self.heads(z)

    def layout(self, batch: RequestBatch) -> Layout:
        """The batch's Layout, with what this model's attention reads from it: the id-match
        prior (dense, or raw ids for the flex kernel to match on the fly) and the block mask."""
        chunk_tokens = self.chunk_bytes // (4 * self.cfg.ffn_mult * self.cfg.dim) if self.chunk_bytes else None
        layout = Layout.of(batch, self.length_buckets, chunk_tokens)
        extra = {"ids": self.embed.batch_ids(batch)} if self.reads_history else {}
        if not self.attends:
            return dataclasses.replace(layout, **extra)
        if self.kernel == "flex":
            extra["block_mask"] = layout.flex_block_mask(self.cfg.null_slot)
        if self.cfg.match_prior is not None:
            if self.cfg.match_by == "id" and self.kernel == "flex":
                extra["match_ids"] = (batch.targets["item_id"], batch.targets["author_id"],
                                      batch.history["item_id"], batch.history["author_id"])
            elif self.cfg.match_by == "id":
                extra["match_log_n"] = match_log_n(batch, layout)
            else:
                extra["match_log_n"] = similarity_log_n(self.embed, batch, layout, extra.get("ids"))
        return dataclasses.replace(layout, **extra) if extra else layout

    def history_tokens(self, batch: RequestBatch, layout: Layout) -> torch.Tensor:  # [N, D]
        x = self.embed.history(batch, layout)
        side = self.features("history", batch.history.values) if self.features is not None else None
        return x if side is None else x + side

    def target_tokens(self, batch: RequestBatch, layout: Layout | None = None) -> torch.Tensor:  # [T, D]
        x = self.embed.target(batch, layout)
        side = self.features("target", batch.targets.values) if self.features is not None else None
        return x if side is None else x + side


class StcaModel(RankingModel):
    """The paper's STCA: stacked target-to-history cross attention with query fusion."""

    def _build(self, cfg: ModelConfig, kernel: str) -> int:
        D = cfg.dim
        self.query = nn.Sequential(feed_forward(cfg, D, D), nn.LayerNorm(D))  # q(1) = LN(SwiGLU(x_t))
        self.layers = nn.ModuleList(StcaLayer(cfg, kernel) for _ in range(cfg.layers))
        # query fusion: q(i+1) = LN(SwiGLU([o(1)..o(i), x_t] W_C)); the SwiGLU's first projection is W_C
        self.fuse = nn.ModuleList(nn.Sequential(feed_forward(cfg, (i + 2) * D, D), nn.LayerNorm(D))
                                  for i in range(cfg.layers - 1 if cfg.query_fusion else 0))
        return cfg.layers

    def summaries(self, batch: RequestBatch, layout: Layout, x_t: torch.Tensor) -> list[torch.Tensor]:
        x = self.history_tokens(batch, layout)  # [N, D]
        q, outs = self.query(x_t), []
        for i, layer in enumerate(self.layers):
            outs.append(layer(q, x, layout))  # o(i+1): [T, D]
            if i < len(self.fuse):  # without query fusion every layer keeps q(1)
                q = self.fuse[i](torch.cat([*outs, x_t], dim=-1))
        return outs


class DinModel(RankingModel):
    """DIN-style: one target-attention layer from the raw target embedding."""

    def _build(self, cfg: ModelConfig, kernel: str) -> int:
        self.attn = target_attention(cfg, kernel)
        return 1

    def summaries(self, batch: RequestBatch, layout: Layout, x_t: torch.Tensor) -> list[torch.Tensor]:
        return [self.attn(x_t, self.history_tokens(batch, layout), layout)]


class TransformerModel(RankingModel):
    """Self-attention over each history (quadratic in L), then target attention: the baseline."""

    def _build(self, cfg: ModelConfig, kernel: str) -> int:
        D = cfg.dim
        self.query = nn.Sequential(feed_forward(cfg, D, D), nn.LayerNorm(D))
        self.blocks = nn.ModuleList(SelfAttentionBlock(cfg) for _ in range(cfg.layers))
        self.null_token = nn.Parameter(torch.zeros(D))
        self.final_norm = nn.LayerNorm(D)
        self.attn = target_attention(cfg, kernel)
        return 1

    def summaries(self, batch: RequestBatch, layout: Layout, x_t: torch.Tensor) -> list[torch.Tensor]:
        x = self.history_tokens(batch, layout)  # [N, D]
        padded = torch.cat([self.null_token.expand(layout.B, 1, -1), layout.pad_history(x)], 1)  # [B, 1+L, D]
        mask = F.pad(layout.hist_mask, (1, 0), value=True)
        for block in self.blocks:
            padded = block(padded, mask)
        tokens = self.final_norm(padded[:, 1:][layout.hist_seg, layout.hist_pos])  # [N, D]
        return [self.attn(self.query(x_t), tokens, layout)]


class MeanPoolModel(RankingModel):
    """Each request's mean history token (zero when empty)."""

    attends = False

    def _build(self, cfg: ModelConfig, kernel: str) -> int:
        return 1

    def summaries(self, batch: RequestBatch, layout: Layout, x_t: torch.Tensor) -> list[torch.Tensor]:
        x = self.history_tokens(batch, layout)  # [N, D]
        sums = x.new_zeros(layout.B, x.shape[1]).index_add_(0, layout.hist_seg, x)
        counts = batch.history.lengths().clamp_min(1).to(x.dtype)[:, None]
        return [(sums / counts)[layout.tgt_seg]]


class NoHistoryModel(RankingModel):
    """The target alone: what the history adds is measured against this."""

    attends = False
    reads_history = False

    def _build(self, cfg: ModelConfig, kernel: str) -> int:
        return 0

    def summaries(self, batch: RequestBatch, layout: Layout, x_t: torch.Tensor) -> list[torch.Tensor]:
        return []


ARCH_MODELS: dict[str, type[RankingModel]] = {
    "stca": StcaModel, "din": DinModel, "transformer": TransformerModel, "mean": MeanPoolModel, "none": NoHistoryModel,
}


def make_model(cfg: ModelConfig, spec: DatasetSpec = DEFAULT_SPEC, kernel: str = "padded") -> RankingModel:
    """The model of cfg.arch for `spec`, with target attention by `kernel` (padded or flex)."""
    return ARCH_MODELS[cfg.arch](cfg, spec, kernel)


def match_log_n(batch: RequestBatch, layout: Layout) -> list[torch.Tensor]:
    """Per bucket, [Bb, 2, Mb, 1+Lb]: log(n) where history event l of request b shares the item
    (0) / the author (1) of target m, else 0. Padded history slots and the null slot (0) never
    match; padded target rows are dropped later."""
    sides = [zip(layout.bucket_targets(batch.targets[key]), layout.bucket_history(batch.history[key]))
             for key in ("item_id", "author_id")]  # per side, per bucket: [Bb, Mb], [Bb, Lb]
    out = []
    for bucket, *pairs in zip(layout.buckets, *sides):
        matches = torch.stack([(t[:, :, None] == h[:, None, :]) & bucket.hist_mask[:, None, :] for t, h in pairs], 1)
        out.append(F.pad(matches, (1, 0)) * bucket.log_n[:, None, None, None])  # [Bb, 2, Mb, 1+Lb]
    return out


def similarity_log_n(embed: TokenEmbedding, batch: RequestBatch, layout: Layout,
                     ids: BatchIds | None = None) -> list[torch.Tensor]:
    """Per bucket, [Bb, 2, Mb, 1+Lb]: log(n) * cos(target m, history event l) of their item (0) /
    author (1) embeddings: match_log_n with learned similarity for id equality. Padded slots and
    the null slot (0) get 0; gradients reach the embeddings. `ids`: the batch's id vectors, if
    already looked up."""
    ids = ids or embed.batch_ids(batch)
    sides = [zip(layout.bucket_targets(F.normalize(t_vec, dim=-1)), layout.bucket_history(F.normalize(h_vec, dim=-1)))
             for t_vec, h_vec in zip(ids.target, ids.history)]  # per side, per bucket: [Bb, Mb, D], [Bb, Lb, D]
    out = []
    for bucket, *pairs in zip(layout.buckets, *sides):
        cos = torch.stack([tq @ hk.transpose(1, 2) for tq, hk in pairs], 1)  # [Bb, 2, Mb, Lb]; padded keys are zero
        out.append(F.pad(cos, (1, 0)) * bucket.log_n[:, None, None, None])
    return out


def loss_fn(logits: torch.Tensor, batch: RequestBatch) -> torch.Tensor:
    """BCE per task, averaged over targets and tasks (every target weighs the same)."""
    return F.binary_cross_entropy_with_logits(logits.float(), batch.labels().to(logits.device))


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
