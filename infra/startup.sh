#!/usr/bin/env bash
# App Service startup command (Configuration > General settings > Startup Command:
# `bash infra/startup.sh`). Secrets arrive as app settings (Key Vault references).
set -euo pipefail
cd "$(dirname "$0")/.."

python manage.py migrate --no-input
python manage.py createcachetable
python manage.py collectstatic --no-input
python manage.py setup_schedules

# The task cluster runs beside the web workers; if it dies, the instance restarts so it comes back.
python manage.py qcluster &
cluster=$!
gunicorn abaco.wsgi --config infra/gunicorn.conf.py &
web=$!
trap 'kill -TERM $cluster $web 2>/dev/null; wait' TERM INT
wait -n $cluster $web
exit 1
