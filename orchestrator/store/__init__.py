"""The SQLite store under `.orchestrator/`: recorded durations, collections and run
history.
"""
