"""The on-disk dataset that the ETL writes and the trainer reads: where a build's outputs
live (layout), how a path is reached (storage), raw log partitions (raw) and the published
days (published). Both sides import this; it imports only schemas."""
