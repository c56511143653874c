"""Attested launch: what each executor runs, measured and checked against what was vouched for.

`measure` turns a running executor into digests (`Measurement`), `differences` names what
changed, and `manifest` signs and verifies the operator's reference measurements. The process
driver measures its executors (`endosec.runtime.process.ProcessExecutor.measure`); the
``endosec attest`` commands (`endosec.attest.cli`) make the manifest. See docs/identity.md.
"""

from endosec.attest.manifest import AttestError, Manifest, load_manifest, sign_manifest
from endosec.attest.measure import Measurement, differences

__all__ = ["AttestError", "Manifest", "Measurement", "differences", "load_manifest",
           "sign_manifest"]
