"""endosec.gateway."""
