#!/bin/sh
# Grafana's entrypoint in docker-compose.yml: an admin password without a default one, and no variable to set.
#
# GRAFANA_ADMIN_PASSWORD set (GF_SECURITY_ADMIN_PASSWORD non-empty): Grafana uses it, nothing is written.
# Else, on the first start a random password is generated into the grafana-data volume
# ($GF_PATHS_DATA/admin-password, mode 600) and printed once in this container's log; later starts read it
# from there and say where it is. Grafana applies the admin password only when it creates its database, so
# change it later in Grafana itself (or `grafana cli admin reset-admin-password`).
set -eu
data="${GF_PATHS_DATA:-/var/lib/grafana}"
stored="$data/admin-password"
if [ -z "${GF_SECURITY_ADMIN_PASSWORD:-}" ]; then
  if [ ! -s "$stored" ]; then
    umask 077
    password="$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 24)"
    [ "${#password}" -eq 24 ] || { echo "first-start: could not generate a password" >&2; exit 1; }
    printf '%s\n' "$password" >"$stored.tmp"
    mv "$stored.tmp" "$stored"
    echo "first-start: Grafana admin password (generated now, shown only this once; kept in the grafana-data" \
      "volume at $stored): $password"
  else
    echo "first-start: Grafana admin password: generated on the first start, in $stored" \
      "(docker compose exec grafana cat $stored)"
  fi
  GF_SECURITY_ADMIN_PASSWORD="$(head -n 1 "$stored")"
  export GF_SECURITY_ADMIN_PASSWORD
fi
exec "${GRAFANA_RUN:-/run.sh}" "$@"
