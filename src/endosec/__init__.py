"""endosec: endogenous security for request/response services through Dynamic Heterogeneous
Redundancy (DHR): heterogeneous executors, an arbiter that votes on their outputs, and a
feedback controller that quarantines, cleanses, replaces and rotates them."""

__version__ = "0.1.0"
