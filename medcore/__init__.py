"""Torch-free core shared by trainer, export and service: the model record and imaging."""

from medcore.record import ModelRecord, Preprocessing, Provenance, RecordError, Task

__all__ = ["ModelRecord", "Preprocessing", "Provenance", "RecordError", "Task"]
