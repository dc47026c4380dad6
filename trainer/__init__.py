"""mammo-train: the cross-validated trainer.

It imports mammo_node.ml; nothing in mammo_node imports it.
"""
