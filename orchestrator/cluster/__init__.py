"""Everything that touches Ray: the executor and its relay actors, starting or reaching
Ray, the local `orchestrator up` instance, and shipping the project to other nodes.
"""
