"""Pure planning and scheduling: estimates, the dispatch state machine, retries, resource
shapes, head starts and CI shards. No Ray, no pytest.
"""
