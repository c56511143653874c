"""endosec.protocols."""
