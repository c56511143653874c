#!/bin/sh
# Run one benchmark backend in the foreground: NSD on 127.0.0.1:PORT (UDP and TCP), serving
# the DNS example's zone from SCRATCH, one server process, response rate limiting off.
#   backend.sh PORT SCRATCH
# $NSD overrides the nsd binary.
set -eu
port=$1
scratch=$2
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$scratch"
cp "$here/../../examples/dns/zones/example.test.zone" "$scratch/"
sed -e "s|@PORT@|$port|g" -e "s|@SCRATCH@|$scratch|g" "$here/nsd.conf.in" > "$scratch/nsd.conf"
exec "${NSD:-nsd}" -d -c "$scratch/nsd.conf"
