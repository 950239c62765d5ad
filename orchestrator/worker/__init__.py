"""What runs in a worker: its pytest session, the process that owns it (inside a Ray
actor), live logs, recycling limits and the collector pause.
"""
