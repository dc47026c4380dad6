"""mammo_node.db."""
