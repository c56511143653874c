"""endosec.quantify."""
