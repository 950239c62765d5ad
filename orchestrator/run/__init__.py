"""One run: the controller's loop, what it is configured with, the executor protocol it
drives, and the wire messages between the controller and its workers.
"""
