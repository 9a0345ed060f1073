"""Feature logic shared by the ETL and the trainer. Pure functions on arrays."""

from longseq.features.actions import ACTION_BITS, decode_actions, encode_actions
from longseq.features.hashing import hash_ids, mix64
from longseq.features.lengths import LengthSampler
from longseq.features.time_buckets import NUM_TIME_BUCKETS, time_delta_bucket

__all__ = [
    "ACTION_BITS", "decode_actions", "encode_actions", "hash_ids", "mix64", "LengthSampler",
    "NUM_TIME_BUCKETS", "time_delta_bucket",
]
