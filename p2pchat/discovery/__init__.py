"""Discovery adapters: they find peers and hand them to the node (``Node.discovered``)."""
