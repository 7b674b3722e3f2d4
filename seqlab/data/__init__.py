"""Data: tokenizers, readers per modality, batching, and the data-source registry.

Importing the package registers every data source (``DATA_SOURCES``).
"""

from seqlab.data import (bio_tokenizers, bpe, example_sources, parallel,  # noqa: F401
                         series_source, shards, speech, synthetic_source, text_source)
from seqlab.data.batch import Batch
from seqlab.data.sources import DATA_SOURCES, DataSource, SourceContext, register_source

__all__ = ["Batch", "DATA_SOURCES", "DataSource", "SourceContext", "register_source"]
