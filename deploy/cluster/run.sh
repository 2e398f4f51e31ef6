#!/usr/bin/env bash
# `make cluster`: the fleet's shape on one machine (docs/scale-out.md). PostgreSQL-backed
# gunicorn with 2 workers that host no plugin code, plus 2 worker nodes on different queues
# ('default' and 'gpu'), all sending run ids through RabbitMQ. Ctrl-C stops them all.
set -euo pipefail
cd "$(dirname "$0")/../.."

PY=.venv/bin/python
CLUSTER_DB=${CLUSTER_DB:-portal_cluster}
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/$CLUSTER_DB}
export PORTAL_BROKER_URL=${PORTAL_BROKER_URL:-amqp://guest:guest@127.0.0.1:5672//}
export PORTAL_RUN_EXECUTOR=celery
# Both gunicorn workers count writes against one throttle (PORTAL_CACHE_URL= keeps each its own).
export PORTAL_CACHE_URL=${PORTAL_CACHE_URL-redis://127.0.0.1:6379/0}
export PORTAL_VAR_DIR=${PORTAL_VAR_DIR:-var/cluster}
export PORTAL_PLUGIN_DIRS=${PORTAL_PLUGIN_DIRS:-$PWD/examples/plugins}
# Plain HTTP on this machine: no HSTS and no Secure-only cookies (the production start has TLS).
export SECURE_HSTS_SECONDS=0 SESSION_COOKIE_SECURE=0 CSRF_COOKIE_SECURE=0
mkdir -p "$PORTAL_VAR_DIR"
key_file="$PORTAL_VAR_DIR/.cluster_secret_key"
[ -s "$key_file" ] || "$PY" -c 'import secrets; print(secrets.token_urlsafe(50))' >"$key_file"
SECRET_KEY=$(cat "$key_file")
export SECRET_KEY

if [[ $DATABASE_URL == postgres://*/"$CLUSTER_DB" ]]; then
  createdb -h 127.0.0.1 -U postgres "$CLUSTER_DB" 2>/dev/null || true  # exists already: fine
fi
"$PY" manage.py migrate --noinput
"$PY" manage.py ensureadmin

pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait
}
trap stop INT TERM EXIT

"$PY" manage.py runworker --name node-default --queues default --concurrency 2 &
pids+=($!)
"$PY" manage.py runworker --name node-gpu --queues gpu --concurrency 1 &
pids+=($!)
# Loads run on the nodes: wait until both are heard from, then load the examples there.
"$PY" -c '
import os, sys, time, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django.setup()
from plugins_app.fleet.queues import live_workers_per_queue
deadline = time.monotonic() + 120
while not {"default", "gpu"} <= set(live_workers_per_queue()):
    if time.monotonic() > deadline:
        sys.exit("The worker nodes were not alive after 120 s: their output above says why")
    time.sleep(0.2)
'
# The examples show every state, so some end FAILED or UNAVAILABLE on purpose (exit 1).
"$PY" manage.py loadplugins || [ $? -eq 1 ]
echo "Cluster: http://${HOST:-127.0.0.1}:${PORT:-8000}/admin/  workers: /v1/workers  (Ctrl-C stops it)"
.venv/bin/gunicorn portal.wsgi --bind "${HOST:-127.0.0.1}:${PORT:-8000}" --workers 2 --threads 4 &
pids+=($!)
wait -n "${pids[@]}"
