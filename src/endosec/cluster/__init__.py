"""Control state outside one gateway's memory: the store, the members of a boundary, its
leader, and the ledger anchors kept there (`docs/cluster.md`)."""
