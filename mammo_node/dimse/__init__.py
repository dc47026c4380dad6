"""mammo_node.dimse."""
