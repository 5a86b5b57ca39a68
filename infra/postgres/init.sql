-- The team stack's databases, created on the first start of an empty Postgres volume: the postgres
-- image runs /docker-entrypoint-initdb.d/*.sql once, with psql, as the superuser, and never again
-- (changing a password later: ALTER ROLE ... PASSWORD, see infra/README.md).
--
-- Passwords are read from the container's environment with psql's \getenv (PostgreSQL 15+), so no
-- secret lives in this file; compose refuses to start while one of them is unset.
\set ON_ERROR_STOP on
\getenv prefect_password PREFECT_DB_PASSWORD
\getenv mlflow_password MLFLOW_DB_PASSWORD

-- Prefect server: asyncpg, postgresql+asyncpg://prefect@postgres:5432/prefect
CREATE ROLE prefect LOGIN PASSWORD :'prefect_password';
CREATE DATABASE prefect OWNER prefect;

-- MLflow tracking + model registry: psycopg2, postgresql+psycopg2://mlflow@postgres:5432/mlflow
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
-- MLflow basic-auth users and permissions (the `--app-name basic-auth` store), kept apart from the
-- tracking tables.
CREATE DATABASE mlflow_auth OWNER mlflow;

-- Each role reaches only its own databases.
REVOKE CONNECT ON DATABASE prefect, mlflow, mlflow_auth FROM PUBLIC;

-- Prefect's migrations create pg_trgm (trusted since PostgreSQL 13, so its owner could too); made
-- here once so a locked-down server needs nothing more.
\connect prefect
CREATE EXTENSION IF NOT EXISTS pg_trgm;
