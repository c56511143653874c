"""The native data plane (built from rust/ by maturin)."""
