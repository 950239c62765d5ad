"""Exceptions the core raises; the CLI and the plugin turn them into messages and exit codes."""

from __future__ import annotations


class OrchestratorError(Exception):
    """A problem the user can fix; the message says what to do."""


class UsageError(OrchestratorError):
    """An option has a value we cannot use."""


class ClusterError(OrchestratorError):
    """The Ray cluster cannot be reached or cannot host the workers."""


class CollectionMismatch(OrchestratorError):
    """A worker collected a different set of tests than the controller."""
