"""Great Expectations gate for raw and cleaned transactions."""

from training.validation.gate import GateResult, ValidationFailed, run_gate
from training.validation.suites import SuiteContext, clean_suite, raw_suite

__all__ = ["GateResult", "ValidationFailed", "run_gate", "SuiteContext", "raw_suite", "clean_suite"]
