"""Published days in, `RequestBatch`es out: the one seam between the data and the trainer.

    from longseq.reader import ReaderConfig, open_published
    for batch in open_published("data/out", start, end, ReaderConfig(batch_size=64)).batches(epoch=0):
        ...  # batch: RequestBatch (reader/batch.py): jagged histories and targets, no padding

The published layout (dataset/published.py) is the contract between the writer and this
package; the trainer, evaluation and benchmarks read data only through it. Inside:
`readers.py` (open a build's published days; Petastorm or pyarrow), `petastorm_reader.py`,
`steps.py` (what every reader does to row groups: shuffle, truncate, batch), `chunks.py`
(row groups as flat arrays plus offsets), `batch.py` (`RequestBatch`), and `testing.py`
(made-up batches for tests and benchmarks).
"""

from longseq.reader.batch import Jagged, RequestBatch, device_batches
from longseq.reader.readers import ReaderConfig, RequestReader, data_spec, open_published, open_reader

__all__ = ["Jagged", "ReaderConfig", "RequestBatch", "RequestReader", "data_spec", "device_batches", "open_published",
           "open_reader"]
