"""The model server at central: slots, routing, sandboxed workers, the prediction log.

Imported only by the central agent; nothing here is loaded by ``%load_ext jupyter_handoff``.
"""
