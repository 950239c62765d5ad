"""The pytest plugin of the orchestrator: ``pytest --ray`` runs the suite on Ray workers."""
