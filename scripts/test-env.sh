# Sourced by `make test`: where the tests find PostgreSQL and Chromium, and Ray kept quiet and local.
export AUTOPRUNE_TEST_POSTGRES_URL=${AUTOPRUNE_TEST_POSTGRES_URL:-postgresql+psycopg://autoprune:autoprune@127.0.0.1:5432/autoprune_test}
export AUTOPRUNE_CHROMIUM=${AUTOPRUNE_CHROMIUM:-/usr/bin/chromium}
export RAY_AUTH_MODE=disabled
export RAY_USAGE_STATS_ENABLED=0
export RAY_DEDUP_LOGS=0
export AUTOPRUNE_CACHE_DIR=${AUTOPRUNE_CACHE_DIR:-$PWD/.cache/autoprune}
