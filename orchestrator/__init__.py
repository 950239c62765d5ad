"""Run pytest suites on Ray workers, longest tests first, with results identical to plain pytest.

PYTEST_DONT_REWRITE: the command line and the workers import this package before pytest
starts; it holds no test code whose assertions pytest should rewrite.
"""

from orchestrator.errors import OrchestratorError, UsageError

__version__ = "0.1.0"

__all__ = ["OrchestratorError", "UsageError", "__version__"]
