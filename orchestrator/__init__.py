"""Run pytest suites on Ray workers, longest tests first, with results identical to plain pytest."""

from orchestrator.errors import OrchestratorError, UsageError

__version__ = "0.1.0"

__all__ = ["OrchestratorError", "UsageError", "__version__"]
