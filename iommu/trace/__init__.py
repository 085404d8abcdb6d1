"""DMA traces: events, the CSV / JSON Lines / binary / ftrace formats, access models and a
synthetic workload generator (CONTRACT.md, "Traces: iommu.trace")."""
from .access_model import ACCESS_MODELS, AccessModel, apply_access_model
from .binary import (
    BINARY_RECORD,
    FILE_HEADER,
    MAGIC,
    NUMPY_DTYPE_DESCR,
    RECORD_SIZE,
    BinaryReader,
    iter_binary_chunks,
    numpy_dtype,
    read_binary,
    write_binary,
)
from .events import (
    OPS,
    TraceError,
    TraceEvent,
    TraceReader,
    canonical_pci_name,
    device_ids,
    parse_pci_name,
    pci_name,
    source_id,
)
from .formats import (
    FORMATS,
    WRITABLE_FORMATS,
    convert,
    detect_format,
    open_trace,
    write_trace,
)
from .ftrace import FtraceReader, read_ftrace
from .generate import WORKLOADS, generate
from .text_formats import CsvReader, JsonlReader, read_csv, read_jsonl, write_csv, write_jsonl

__all__ = [
    "ACCESS_MODELS", "AccessModel", "apply_access_model",
    "BINARY_RECORD", "FILE_HEADER", "MAGIC", "NUMPY_DTYPE_DESCR", "RECORD_SIZE",
    "BinaryReader", "iter_binary_chunks", "numpy_dtype", "read_binary", "write_binary",
    "OPS", "TraceError", "TraceEvent", "TraceReader", "canonical_pci_name", "device_ids",
    "parse_pci_name", "pci_name", "source_id",
    "FORMATS", "WRITABLE_FORMATS", "convert", "detect_format", "open_trace", "write_trace",
    "FtraceReader", "read_ftrace", "WORKLOADS", "generate",
    "CsvReader", "JsonlReader", "read_csv", "read_jsonl", "write_csv", "write_jsonl",
]
