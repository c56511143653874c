"""Red-team and fault-injection drills: planted implants, faults and hostile clients against a
live deployment, with a report of what DHR suppressed, detected and kept available.

See docs/redteam.md. The command is ``endosec redteam`` (`endosec.redteam.cli.redteam`); the
implant wrapper is ``python -m endosec.redteam.implant``.
"""
