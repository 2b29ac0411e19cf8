"""Process table: /proc bootstrap, fork/exec/exit tracking, ancestry, users and entity ids."""

from sentinel.process.facts import FactSource, LiveFacts, ProcFacts, ReplayFacts, read_proc_facts
from sentinel.process.table import Process, ProcessTable, TableStats, entity_id, normalize_path

__all__ = [
    "FactSource",
    "LiveFacts",
    "ProcFacts",
    "Process",
    "ProcessTable",
    "ReplayFacts",
    "TableStats",
    "entity_id",
    "normalize_path",
    "read_proc_facts",
]
