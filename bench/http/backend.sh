#!/bin/sh
# Run one benchmark backend in the foreground: nginx on 127.0.0.1:PORT with its own prefix.
#   backend.sh PORT SCRATCH [DISSENT_PERCENT]
# DISSENT_PERCENT > 0 makes that share of requests (chosen by $request_id) return a
# different body. $NGINX overrides the nginx binary.
set -eu
port=$1
scratch=$2
dissent=${3:-0}
here=$(cd "$(dirname "$0")" && pwd)
line=""
if [ "$dissent" != "0" ]; then
    line="${dissent}% '{\"ok\":false,\"service\":\"bench\",\"items\":[1,2,3]}';"
fi
mkdir -p "$scratch/tmp"
sed -e "s|@PORT@|$port|g" -e "s|@PREFIX@|$scratch|g" -e "s|@DISSENT@|$line|" \
    "$here/backend.conf.in" > "$scratch/nginx.conf"
exec "${NGINX:-nginx}" -p "$scratch" -c "$scratch/nginx.conf" -e stderr
