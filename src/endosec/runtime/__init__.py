"""endosec.runtime."""
