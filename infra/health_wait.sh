#!/usr/bin/env bash
# Wait until a deployed site answers 200 on /?page=health (the process is up) and /readyz (the
# database and a task cluster answer). Used by .github/workflows/deploy.yml and the runbooks.
#   bash infra/health_wait.sh https://abaco-production-web.azurewebsites.net [seconds]
set -euo pipefail
base="${1:?usage: health_wait.sh BASE_URL [SECONDS]}"
deadline=$(( $(date +%s) + ${2:-600} ))
for path in "/?page=health" "/readyz"; do
  until status="$(curl -s -o /tmp/health_wait.body -w '%{http_code}' --max-time 20 "$base$path")" \
      && [ "$status" = "200" ]; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "$base$path answered ${status:-nothing}: $(head -c 500 /tmp/health_wait.body 2>/dev/null)" >&2
      exit 1
    fi
    sleep 10
  done
  echo "$base$path: 200"
done
