"""Parquet held in memory, read without pyarrow's dataset scanner.

``pd.read_parquet`` and ``pq.read_table`` on a ``BytesIO`` go through the scanner, whose
threads outlive the read: here about one process in four that did it then aborted at exit
("terminate called without an active exception", apache/arrow#34314), an agent or a command
ending with SIGABRT after its work was done. ``ParquetFile.read`` decodes without the scanner
and gives the same frame, a little faster.
"""

from __future__ import annotations

import io


def read_table(data: bytes):
    import pyarrow.parquet as pq

    return pq.ParquetFile(io.BytesIO(data)).read()


def read_frame(data: bytes):
    return read_table(data).to_pandas()
