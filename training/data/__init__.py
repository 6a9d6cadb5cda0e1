"""Data in: simulator, real-data adapter, versioned snapshots."""

from training.data.cleaning import CleaningReport, clean_transactions, read_transactions
from training.data.simulator import SimulationResult, simulate
from training.data.versions import DataRegistry, DataVersion, VersionNotFound
from training.data.world import SCENARIOS, SimulationConfig

__all__ = ["CleaningReport", "clean_transactions", "read_transactions", "SimulationResult", "simulate",
           "DataRegistry", "DataVersion", "VersionNotFound", "SCENARIOS", "SimulationConfig"]
