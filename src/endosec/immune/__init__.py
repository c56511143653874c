"""Immune learning: detectors trained across gateways by clone selection with federated
learning, exchanged sealed, recorded in the ledger (docs/immune.md)."""
