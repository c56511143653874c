"""Run one of the web example's servers (nginx, Apache httpd, lighttpd) in the foreground.

endosec starts each executor as ``launch.py SERVER --port P --scratch S --docroot D``. The
launcher prepares the scratch directory the runtime has just wiped, then replaces itself with
the server (``os.execvp``), so the runtime's process-group signals reach the server directly:

* ``S/site`` - a fresh copy of the shipped docroot plus ``large.bin``, 20 MiB generated from a
  fixed seed (identical bytes and mtime on every server, nothing large in the repository);
* ``S/<server>.conf`` - the server's own configuration, generated here: loopback port P,
  pid, lock and temporary files under S, logs on standard error (the runtime keeps them in
  its log directory, outside S), no system service or system configuration involved.

The three configurations are written to agree wherever configuration can make them agree:
the same MIME types, no ETags, no directory listings, the shipped error pages for 403 and
404, single byte ranges only. What still differs is canonicalised in ``endosec.yaml``.

When run as root the servers' workers drop to ``nobody`` (Apache refuses to serve as root),
so the scratch directory's ancestors must be searchable by others.
"""

from __future__ import annotations

import argparse
import grp
import hashlib
import os
import pwd
import shutil
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

LARGE_NAME = "large.bin"
LARGE_SIZE = 20 << 20
LARGE_SEED = b"endosec web example large.bin v1"
FIXED_MTIME = 1_700_000_000  # 2023-11-14T22:13:20Z: the same Last-Modified on every server
APACHE_MODULES = Path("/usr/lib/apache2/modules")
LIGHTTPD_MODULES = Path("/usr/lib/lighttpd")

# One MIME table for all three servers; anything else is application/octet-stream.
MIME_TYPES: tuple[tuple[str, str], ...] = (
    ("html", "text/html; charset=utf-8"),
    ("css", "text/css; charset=utf-8"),
    ("txt", "text/plain; charset=utf-8"),
    ("json", "application/json"),
    ("png", "image/png"),
    ("bin", "application/octet-stream"),
)
DEFAULT_TYPE = "application/octet-stream"
# Removed from requests by Apache and lighttpd (nginx: if_modified_since off), so conditional
# GETs are answered in full: lighttpd's 304 carries a Content-Type the others omit, and with
# ETags off the validators would differ anyway. See docs/heterogeneity.md.
CONDITIONAL_HEADERS = ("If-Modified-Since", "If-Unmodified-Since", "If-None-Match", "If-Match")


@dataclass(frozen=True, slots=True)
class Layout:
    """Where one server instance keeps everything, and whom it runs as."""

    port: int
    scratch: Path
    site: Path
    user: str | None  # None: stay the invoking user
    group: str | None


def large_bytes() -> bytes:
    """The large file's content: SHAKE-256 output, the same on every machine and version."""
    return hashlib.shake_256(LARGE_SEED).digest(LARGE_SIZE)


def prepare_site(docroot: Path, layout: Layout) -> None:
    """Copy the pristine docroot into scratch and add the generated large file."""
    shutil.copytree(docroot, layout.site, copy_function=shutil.copy2)
    large = layout.site / LARGE_NAME
    large.write_bytes(large_bytes())
    os.utime(large, (FIXED_MTIME, FIXED_MTIME))
    for sub in ("tmp", "run", "pages"):
        (layout.scratch / sub).mkdir(exist_ok=True)
    (layout.scratch / "pages" / ".moved").write_bytes(b"")  # the body of directory redirects
    if layout.user is not None:
        _open_to_workers(layout, layout.user)


def _open_to_workers(layout: Layout, user: str) -> None:
    """Let unprivileged workers read the site and write their temp and run directories."""
    for parent in layout.scratch.parents:
        if not parent.stat().st_mode & stat.S_IXOTH:
            sys.exit(f"launch.py: {parent} is not searchable by {user}; the servers' "
                     "workers could not reach the site (use a state directory others can "
                     "traverse)")
    layout.scratch.chmod(0o755)
    for root, dirs, files in os.walk(layout.site):
        for d in dirs:
            (Path(root) / d).chmod(0o755)
        for f in files:
            (Path(root) / f).chmod(0o644)
    pw = pwd.getpwnam(user)
    for sub in ("tmp", "run"):
        os.chown(layout.scratch / sub, pw.pw_uid, pw.pw_gid)


def nginx(layout: Layout) -> tuple[str, list[str]]:
    """nginx.conf: one master and one worker, every path under scratch."""
    s = layout.scratch
    user = f"user {layout.user} {layout.group};\n" if layout.user else ""
    # The charset is part of the type, as for the others (nginx's charset filter would decide
    # it from what was asked for: a 416 page for /data.json came without one).
    types = "".join(f'        "{mime}" {ext};\n' for ext, mime in MIME_TYPES)
    conf = f"""{user}daemon off;
master_process on;
worker_processes 1;
pid {s}/run/nginx.pid;
error_log stderr warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    types {{
{types}    }}
    default_type {DEFAULT_TYPE};
    client_body_temp_path {s}/tmp/body;
    proxy_temp_path {s}/tmp/proxy;
    fastcgi_temp_path {s}/tmp/fastcgi;
    uwsgi_temp_path {s}/tmp/uwsgi;
    scgi_temp_path {s}/tmp/scgi;
    server_tokens off;
    etag off;
    if_modified_since off;
    max_ranges 1;
    keepalive_requests 100000;
    disable_symlinks on;
    server {{
        listen 127.0.0.1:{layout.port};
        root {layout.site};
        index index.html;
        autoindex off;
        error_page 400 /errors/400.html;
        error_page 403 /errors/403.html;
        error_page 404 /errors/404.html;
        error_page 416 /errors/416.html;
        error_page 301 /.moved;
        # A directory without its slash: the absolute Location Apache and lighttpd send.
        if (-d $request_filename) {{
            rewrite ^(.*[^/])$ http://$http_host$1/ permanent;
        }}
        location / {{
            limit_except GET {{ deny all; }}
        }}

        # The empty body of redirects (lighttpd's); not reachable from outside.
        location = /.moved {{
            internal;
            root {s}/pages;
            default_type "";
        }}
    }}
}}
"""
    conf_path = s / "nginx.conf"
    conf_path.write_text(conf)
    return "nginx", ["nginx", "-p", str(s), "-c", str(conf_path), "-e", "stderr"]


def apache(layout: Layout) -> tuple[str, list[str]]:
    """A self-contained apache2.conf: Debian's modules loaded by path, nothing from /etc."""
    s = layout.scratch
    modules = ("mpm_event", "authz_core", "mime", "dir", "autoindex", "alias", "headers")
    loads = "".join(f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so\n" for m in modules)
    user = f"User {layout.user}\nGroup {layout.group}\n" if layout.user else ""
    types = "".join(f'AddType "{mime}" .{ext}\n' for ext, mime in MIME_TYPES)
    unset = "".join(f"RequestHeader unset {h} early\n" for h in CONDITIONAL_HEADERS)
    conf = f"""ServerRoot "{s}"
{loads}{user}ServerName 127.0.0.1
Listen 127.0.0.1:{layout.port}
PidFile "{s}/run/apache2.pid"
DefaultRuntimeDir "{s}/run"
Mutex file:{s}/run default
ErrorLog /dev/stderr
LogLevel warn
TypesConfig /dev/null
{types}ServerTokens Prod
ServerSignature Off
StartServers 1
ServerLimit 2
ThreadsPerChild 32
MaxRequestWorkers 64
MinSpareThreads 16
MaxSpareThreads 64
KeepAlive On
MaxKeepAliveRequests 0
FileETag None
MaxRanges 1
UseCanonicalName Off
DocumentRoot "{layout.site}"
<Directory />
    AllowOverride None
    Require all denied
</Directory>
<Directory "{layout.site}">
    Options -Indexes -FollowSymLinks
    AllowOverride None
    DirectoryIndex index.html
    <LimitExcept GET>
        Require all denied
    </LimitExcept>
</Directory>
<Directory "{s}/pages">
    Require all granted
</Directory>
ErrorDocument 400 /errors/400.html
ErrorDocument 403 /errors/403.html
ErrorDocument 404 /errors/404.html
ErrorDocument 416 /errors/416.html
# The empty body of redirects (lighttpd's); direct requests get the 404 page.
ErrorDocument 301 /.moved
Alias /.moved "{s}/pages/.moved"
<Location "/.moved">
    <If "-z %{{ENV:REDIRECT_STATUS}}">
        Redirect 404
    </If>
</Location>
# Error documents are files: drop the validator nginx and lighttpd do not send on errors.
Header unset Last-Modified "expr=%{{REQUEST_STATUS}} -ge 300"
# Conditional requests are answered in full (see the example's documentation).
{unset}"""
    conf_path = s / "apache2.conf"
    conf_path.write_text(conf)
    return "/usr/sbin/apache2", ["apache2", "-f", str(conf_path), "-DFOREGROUND"]


def lighttpd(layout: Layout) -> tuple[str, list[str]]:
    """lighttpd.conf for a single foreground process."""
    s = layout.scratch
    user = (f'server.username = "{layout.user}"\nserver.groupname = "{layout.group}"\n'
            if layout.user else "")
    types = ",\n".join(f'    ".{ext}" => "{mime}"' for ext, mime in MIME_TYPES)
    unconditional = ", ".join(f'"{h}" => ""' for h in CONDITIONAL_HEADERS)
    conf = f"""server.modules = ("mod_access", "mod_setenv", "mod_rewrite")
server.document-root = "{layout.site}"
server.bind = "127.0.0.1"
server.port = {layout.port}
server.pid-file = "{s}/run/lighttpd.pid"
server.upload-dirs = ("{s}/tmp")
{user}server.tag = ""
server.max-keep-alive-requests = 100000
index-file.names = ("index.html")
static-file.etags = "disable"
# A file followed by more path (/data.json/, /data.json/x) is a 404, as nginx and Apache say;
# lighttpd would serve the file (path info), or refuse it with 403 when path info is off.
# (Only segments with a dot are files here: no directory of the site has one.)
url.rewrite-if-not-file = ("^/([^/?]*/)*[^/?]*[.][^/?]*/" => "/errors/.missing")
server.follow-symlink = "disable"
server.errorfile-prefix = "{layout.site}/errors/"
server.feature-flags = ("server.absolute-dir-redirect" => "enable")
$HTTP["request-method"] !~ "^(GET|HEAD)$" {{
    url.access-deny = ("")
}}
setenv.set-request-header = ({unconditional})
$REQUEST_HEADER["Range"] =~ "," {{
    setenv.set-request-header = ({unconditional}, "Range" => "", "If-Range" => "")
}}
mimetype.assign = (
{types},
    "" => "{DEFAULT_TYPE}"
)
"""
    conf_path = s / "lighttpd.conf"
    conf_path.write_text(conf)
    return "lighttpd", ["lighttpd", "-D", "-f", str(conf_path), "-m", str(LIGHTTPD_MODULES)]


SERVERS: dict[str, Callable[[Layout], tuple[str, list[str]]]] = {
    "nginx": nginx, "apache": apache, "lighttpd": lighttpd,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server", choices=sorted(SERVERS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--scratch", type=Path, required=True)
    parser.add_argument("--docroot", type=Path, required=True)
    args = parser.parse_args()
    scratch = args.scratch.resolve()
    user = group = None
    if os.geteuid() == 0:
        pw = pwd.getpwnam("nobody")
        user, group = pw.pw_name, grp.getgrgid(pw.pw_gid).gr_name
    layout = Layout(args.port, scratch, scratch / "site", user, group)
    prepare_site(args.docroot.resolve(), layout)
    program, argv = SERVERS[args.server](layout)
    sys.stdout.flush()
    os.execvp(program, argv)


if __name__ == "__main__":
    main()
