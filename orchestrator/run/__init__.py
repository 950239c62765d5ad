"""One run: the controller's loop, the executor protocol it drives, and the wire messages
between the controller and its workers.
"""
