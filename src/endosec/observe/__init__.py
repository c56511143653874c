"""endosec.observe."""
