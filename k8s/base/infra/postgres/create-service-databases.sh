#!/usr/bin/env bash
# Creates one role and one database per service, each owned by its role, from the DATABASE_URL
# Secret the service itself is given (mounted here as SHOP_DB_<SERVICE>). The credentials thus
# live in one place. The postgres image runs this once, when the data directory is empty.
set -euo pipefail

for var in $(compgen -e | grep -E '^SHOP_DB_[A-Z_]+$' || true); do
  url="${!var}"
  rest="${url#*://}"          # user:password@host:port/database?options
  creds="${rest%%@*}"
  role="${creds%%:*}"
  password="${creds#*:}"
  database="${rest##*/}"
  database="${database%%\?*}"
  echo "create-service-databases: role and database ${database} (from ${var})"
  psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER}" --dbname postgres \
    --set=role="${role}" --set=password="${password}" --set=database="${database}" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'role', :'password')
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'database', :'role')
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'database') \gexec
SQL
done
