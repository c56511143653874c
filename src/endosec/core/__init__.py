"""The pure DHR core: model, arbiter, canonicalisers, controller, scheduler and trust.

Nothing in this package opens a socket, reads a clock or keeps global state: time and randomness
are passed in, so the same objects run in the gateway, the tests and the quantifier's simulator.
"""
