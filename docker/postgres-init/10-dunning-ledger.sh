#!/bin/sh
# First start of the postgres container only (docker-entrypoint-initdb.d runs on an empty data
# directory): the Dunning ledger gets its own role and database next to Airflow's metadata DB,
# so the two can be backed up, restored and granted separately.
# The password comes from the environment (DUNNING_DB_PASSWORD, from .env), never from this file;
# psql's :'var' quoting keeps it a literal whatever characters it has.
set -eu
: "${DUNNING_DB_PASSWORD:?set DUNNING_DB_PASSWORD}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set=ledger_password="$DUNNING_DB_PASSWORD" <<'SQL'
CREATE ROLE dunning LOGIN PASSWORD :'ledger_password';
CREATE DATABASE dunning OWNER dunning ENCODING 'UTF8' TEMPLATE template0;
REVOKE ALL ON DATABASE dunning FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE dunning TO dunning;
SQL
