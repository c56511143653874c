"""What an executor is made of, as digests: the measurement attested at launch and after.

A measurement maps labels to SHA-256 hex digests:

* ``exe:PATH`` - the program of each executor process (``/proc/PID/exe``), hashed from the file
  at that path as the process sees the filesystem (``/proc/PID/root``). A program replaced on
  disk while it runs (the link ends in `` (deleted)``) gets `REPLACED`: what runs is no longer
  what the path holds, so the digest is reported as changed whatever the path holds now.
* ``lib:PATH`` - every other file mapped executable (``/proc/PID/maps``): the loader, shared
  libraries, extension modules; `REPLACED` too when replaced under the process.
* ``template:REL`` - every regular file of the pristine template, and every symlink by its
  target text: what each start copies into the scratch directory.
* ``config:PATH`` - every file a command-line word names (relative words against the working
  directory) outside the template and the scratch directory, a program already measured
  aside: a script, an ``-c nginx.conf``.
* ``entry`` - the configured entry itself (argv, env, cwd, host, port, template, sandbox,
  network), so a changed command line changes the identity as a changed file does.

`differences` compares two measurements and does no I/O; `take` reads ``/proc`` and the files.
Which processes are the executor's is the driver's to say (`endosec.runtime.process`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from endosec.observe.ledger_format import canonical, sha256_hex

if TYPE_CHECKING:
    from endosec.runtime.process import ExecutorSpec

__all__ = ["ENTRY", "REPLACED", "Measurement", "differences", "entry", "take"]

ENTRY: Final = "entry"
REPLACED: Final = sha256_hex(b"endosec-attest: replaced while running")
"""The digest of a program or library replaced on disk while a process runs it."""

_DELETED: Final = " (deleted)"


@dataclass(frozen=True, slots=True)
class Measurement:
    """One executor's labels and digests, as taken at one moment."""

    executor: str
    digests: Mapping[str, str]

    @property
    def files(self) -> int:
        """How many files (and symlinks) it covers: every label but ``entry``."""
        return sum(1 for label in self.digests if label != ENTRY)


def differences(expected: Mapping[str, str], seen: Mapping[str, str]) -> tuple[str, ...]:
    """Every label whose digest changed, that appeared or that disappeared, sorted."""
    return tuple(sorted(label for label in expected.keys() | seen.keys()
                        if expected.get(label) != seen.get(label)))


def entry(spec: ExecutorSpec) -> dict[str, Any]:
    """The configured entry as measured: an allocated port is None, so it is the same at
    every start; the network is the one it runs in (its own segment, or the host's)."""
    return {"argv": list(spec.argv), "env": dict(spec.env),
            "cwd": None if spec.cwd is None else str(spec.cwd), "host": spec.host,
            "port": spec.port, "template": None if spec.template is None else str(spec.template),
            "sandbox": spec.sandbox, "network": "isolated" if spec.segmented else "host"}


def take(spec: ExecutorSpec, pids: Iterable[int], *, argv: Sequence[str], cwd: Path,
         scratch: Path) -> Measurement:
    """Measure the processes ``pids`` of the executor ``spec`` describes, started with the
    command line ``argv`` (placeholders replaced) in ``cwd``. A process that exits meanwhile
    and a file that cannot be read are left out (their labels disappear)."""
    digests = {ENTRY: sha256_hex(canonical(entry(spec)))}
    programs: set[str] = set()
    for pid in pids:
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue  # it exited while we looked
        program = exe.removesuffix(_DELETED)
        programs.add(os.path.realpath(program))
        root = Path(f"/proc/{pid}/root")
        _put(digests, f"exe:{program}", _seen(root, exe))
        for mapped in _executable_mappings(maps):
            if mapped.removesuffix(_DELETED) != program:
                _put(digests, f"lib:{mapped.removesuffix(_DELETED)}", _seen(root, mapped))
    if spec.template is not None:
        digests.update(_tree(spec.template))
    trees = [Path(os.path.realpath(t)) for t in (spec.template, scratch) if t is not None]
    for path in _named(argv, cwd):
        if str(path) not in programs and not any(path.is_relative_to(t) for t in trees):
            _put(digests, f"config:{path}", _digest(path))
    return Measurement(spec.name, digests)


def _put(digests: dict[str, str], label: str, digest: str | None) -> None:
    """Record a digest; a file one process sees replaced stays replaced whatever another sees."""
    if digest is not None and digests.get(label) != REPLACED:
        digests[label] = digest


def _executable_mappings(maps: str) -> set[str]:
    """The files mapped executable: ``ADDR PERMS OFFSET DEV INODE PATH`` with ``x`` in PERMS
    and an absolute PATH (not ``[vdso]`` and the like)."""
    found = set()
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and "x" in fields[1] and fields[5].startswith("/"):
            found.add(fields[5])
    return found


def _seen(root: Path, link: str) -> str | None:
    """The digest of ``link`` as a process with this root sees it (`REPLACED` if deleted)."""
    return REPLACED if link.endswith(_DELETED) else _digest(root / link.lstrip("/"))


def _digest(path: Path) -> str | None:
    """SHA-256 of a file, read in chunks; None when it cannot be read."""
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def _tree(top: Path) -> dict[str, str]:
    """``template:REL`` for every regular file and symlink under ``top`` (links not followed;
    a link's digest is of its target text, kept apart from any file's content)."""
    out: dict[str, str] = {}
    for directory, dirs, files in os.walk(top):
        for name in (*dirs, *files):
            path = Path(directory, name)
            label = f"template:{path.relative_to(top).as_posix()}"
            if path.is_symlink():
                try:
                    out[label] = sha256_hex(b"symlink\0" + os.fsencode(os.readlink(path)))
                except OSError:
                    continue  # removed while we looked: it disappears
            elif name in files and path.is_file() and (digest := _digest(path)) is not None:
                out[label] = digest
    return out


def _named(argv: Sequence[str], cwd: Path) -> Iterator[Path]:
    """The regular files the words of ``argv`` name, resolved (relative words against
    ``cwd``)."""
    for word in argv:
        if word and "\0" not in word and os.path.isfile(cwd / word):
            yield Path(os.path.realpath(cwd / word))
