#!/usr/bin/env bash
# System parts some tests need: Debian's Chromium (never a downloaded browser build), Debian's
# Fashion-MNIST files, and a running PostgreSQL 15 with a test database. Idempotent; skips what cannot be done without root.
set -uo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else return 1; fi; }

if ! command -v chromium >/dev/null 2>&1; then
  echo "setup-system: installing Debian chromium"
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    || echo "setup-system: could not install chromium; browser tests will fail in CI" >&2
fi

# Fashion-MNIST's IDX files for the built-in `fashion_mnist` dataset (nothing downloads at run time)
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then
  echo "setup-system: installing Debian dataset-fashion-mnist"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null \
    || { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; } \
    || echo "setup-system: could not install dataset-fashion-mnist; the fashion_mnist dataset will say so" >&2
fi

if command -v pg_ctlcluster >/dev/null 2>&1; then
  if ! pg_lsclusters 2>/dev/null | grep -q "15 *main.*online"; then
    as_root pg_ctlcluster 15 main start || echo "setup-system: could not start PostgreSQL" >&2
  fi
  for _ in $(seq 1 20); do pg_isready -h 127.0.0.1 -q && break; sleep 0.5; done
  as_root su postgres -c "psql -q -c \"DO \\\$\\\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='autoprune') THEN CREATE ROLE autoprune LOGIN PASSWORD 'autoprune' CREATEDB; END IF; END\\\$\\\$;\"" >/dev/null 2>&1 || true
  as_root su postgres -c "psql -q -tc \"SELECT 1 FROM pg_database WHERE datname='autoprune_test'\" | grep -q 1 || createdb -O autoprune autoprune_test" >/dev/null 2>&1 || true
fi
exit 0
