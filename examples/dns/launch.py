"""Run one of the DNS example's authoritative servers (BIND 9, NSD, Knot DNS) in the foreground.

endosec starts each executor as ``launch.py SERVER --port P --scratch S --zones Z``. The
launcher prepares the scratch directory the runtime has just wiped, then replaces itself with
the server (``os.execvp``), so the runtime's process-group signals reach the server directly:

* ``S/zones`` - a fresh copy of the shipped zone files (what an attacker with write access
  would edit; a cleanse restores it from the repository);
* ``S/<server>.conf`` - the server's own configuration, generated here: loopback port P over
  UDP and TCP, pid, database and state files under S, logs on standard error (the runtime
  keeps them in its log directory, outside S), no control channel, no system service or
  system configuration involved, recursion off, version and identity hidden.

The servers run as the invoking user (root in CI): ``named`` is given no ``-u``, NSD's
``username`` is empty and Knot's ``user`` is the invoking user. Each reloads its zone files on
SIGHUP. Minimal responses are configured where the server offers it; what still differs (Knot
adds the addresses of mail exchangers to the additional section) is handled by the vote's
``dns.additional: referrals`` setting in ``endosec.yaml``.
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SBIN = ("/usr/sbin", "/sbin")  # where Debian installs the servers, often not on a user's PATH
ZONES: tuple[tuple[str, str], ...] = (("example.test", "example.test.zone"),)


@dataclass(frozen=True, slots=True)
class Layout:
    """Where one server instance keeps everything."""

    port: int
    scratch: Path

    @property
    def zones(self) -> Path:
        return self.scratch / "zones"


def bind(layout: Layout) -> tuple[str, list[str]]:
    s = layout.scratch
    zones = "".join(f'zone "{name}" {{ type primary; file "{layout.zones / file}"; }};\n'
                    for name, file in ZONES)
    conf = f"""options {{
    directory "{s}";
    pid-file "{s}/named.pid";
    session-keyfile none;
    managed-keys-directory "{s}";
    listen-on port {layout.port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    allow-transfer {{ none; }};
    notify no;
    minimal-responses yes;
    dnssec-validation no;
    version none;
    hostname none;
    server-id none;
}};
controls {{ }};
{zones}"""
    path = s / "named.conf"
    path.write_text(conf)
    return "named", ["named", "-g", "-4", "-n", "1", "-c", str(path)]


def nsd(layout: Layout) -> tuple[str, list[str]]:
    s = layout.scratch
    zones = "".join(f'zone:\n    name: "{name}"\n    zonefile: "{layout.zones / file}"\n'
                    for name, file in ZONES)
    conf = f"""server:
    ip-address: 127.0.0.1
    port: {layout.port}
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "{s}"
    database: ""
    pidfile: "{s}/nsd.pid"
    xfrdfile: "{s}/xfrd.state"
    zonelistfile: "{s}/zone.list"
    xfrdir: "{s}"
    server-count: 1
    hide-version: yes
    hide-identity: yes
    minimal-responses: yes
    verbosity: 1
remote-control:
    control-enable: no
{zones}"""
    path = s / "nsd.conf"
    path.write_text(conf)
    return "nsd", ["nsd", "-d", "-c", str(path)]


def knot(layout: Layout) -> tuple[str, list[str]]:
    s = layout.scratch
    pw = pwd.getpwuid(os.getuid())
    user = f"{pw.pw_name}:{grp.getgrgid(pw.pw_gid).gr_name}"
    zones = "".join(f'  - domain: "{name}"\n    file: "{file}"\n' for name, file in ZONES)
    conf = f"""server:
    rundir: "{s}"
    user: {user}
    pidfile: "{s}/knot.pid"
    listen: 127.0.0.1@{layout.port}
    identity: ""
    version: ""
database:
    storage: "{s}/db"
control:
    listen: "{s}/knot.sock"
log:
  - target: stderr
    any: info
template:
  - id: default
    storage: "{layout.zones}"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    semantic-checks: on
zone:
{zones}"""
    path = s / "knot.conf"
    path.write_text(conf)
    return "knotd", ["knotd", "-c", str(path)]


SERVERS: dict[str, Callable[[Layout], tuple[str, list[str]]]] = {
    "bind": bind, "nsd": nsd, "knot": knot,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server", choices=sorted(SERVERS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--scratch", type=Path, required=True)
    parser.add_argument("--zones", type=Path, required=True, help="pristine zone files")
    args = parser.parse_args()
    layout = Layout(args.port, args.scratch.resolve())
    shutil.copytree(args.zones.resolve(), layout.zones, dirs_exist_ok=True)
    program, argv = SERVERS[args.server](layout)
    path = shutil.which(program, path=os.pathsep.join((os.environ.get("PATH", ""), *SBIN)))
    if path is None:
        sys.exit(f"launch.py: {program} not found; install it with "
                 "scripts/install-system-deps.sh")
    sys.stdout.flush()
    os.execv(path, argv)


if __name__ == "__main__":
    main()
