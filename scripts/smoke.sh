#!/usr/bin/env bash
# Smoke-test a running service with curl only:  scripts/smoke.sh http://localhost:8000
# Checks: liveness and readiness, a predict on the shipped sample X-ray (scripts/sample/, CC BY), an error case that
# must be a JSON 4xx with the request id echoed, and a /metrics scrape that counts the predict.
# Environment: SMOKE_API_KEY (sent as a bearer token when the service has keys), SMOKE_READY_TIMEOUT (s, default 60).
# Exits 0 when all pass, else 1 with the step and the reason.
set -uo pipefail

URL=${1:-}
[ -n "$URL" ] || { echo "usage: $0 URL   (e.g. $0 http://localhost:8000)" >&2; exit 2; }
URL=${URL%/}
SAMPLE="$(cd "$(dirname "$0")" && pwd)/sample/chest-xray-pa.jpg"
READY_TIMEOUT=${SMOKE_READY_TIMEOUT:-60}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
AUTH=()
[ -n "${SMOKE_API_KEY:-}" ] && AUTH=(-H "Authorization: Bearer $SMOKE_API_KEY")

fail() { echo "smoke: FAIL $1: $2" >&2; exit 1; }
ok() { echo "smoke: ok   $1"; }
command -v curl >/dev/null || fail setup "curl is not installed"
[ -f "$SAMPLE" ] || fail setup "sample image $SAMPLE is missing"

# request NAME CURL_ARGS... : body to $WORK/NAME.body, headers to $WORK/NAME.head, prints the HTTP status.
request() {
  local name=$1; shift
  : >"$WORK/$name.body"
  curl -sS --max-time 30 -o "$WORK/$name.body" -D "$WORK/$name.head" -w '%{http_code}' "${AUTH[@]}" "$@" \
    2>"$WORK/$name.err" || true  # curl prints 000 when it gets no answer
}
body() { head -c 400 "$WORK/$1.body"; head -c 200 "$WORK/$1.err"; }

# 1. Health: ready within READY_TIMEOUT (a starting service loads and warms up its model first), then live.
deadline=$((SECONDS + READY_TIMEOUT))
while status=$(request ready "$URL/health/ready"); [ "$status" != 200 ]; do
  [ $SECONDS -lt $deadline ] || fail health "GET /health/ready answered $status after ${READY_TIMEOUT}s: $(body ready)"
  sleep 1
done
status=$(request live "$URL/health/live")
[ "$status" = 200 ] || fail health "GET /health/live answered $status: $(body live)"
ok "health: ready and live"

# 2. Predict on the sample: 200 with per-label probabilities (contract: results[0].predictions; the older
#    top-level predictions are accepted too).
status=$(request predict -F "file=@$SAMPLE;type=image/jpeg" "$URL/predict")
[ "$status" = 200 ] || fail predict "POST /predict answered $status: $(body predict)"
grep -Eq '"predictions": ?\[ ?\{ ?"label"' "$WORK/predict.body" ||
  fail predict "no predictions[].label in the answer: $(body predict)"
grep -Eq '"probability": ?[0-9.eE+-]+' "$WORK/predict.body" || fail predict "no probability in the answer: $(body predict)"
ok "predict: $(grep -Eo '"label": ?"[^"]*", ?"probability": ?[0-9.eE+-]+' "$WORK/predict.body" | head -3 | tr '\n' ' ')"

# 3. An error case: a text file is not an image -> a JSON 4xx with a code, and our request id echoed.
rid="smoke-$$-$RANDOM"
printf 'this is not an image\n' >"$WORK/not-an-image.txt"
status=$(request bad -H "X-Request-ID: $rid" -F "file=@$WORK/not-an-image.txt;type=text/plain" "$URL/predict")
case "$status" in 400|415|422) ;; *) fail error-case "a text file answered $status, expected 400/415/422: $(body bad)" ;; esac
grep -Eq '"code": ?"[a-z_]+"' "$WORK/bad.body" || fail error-case "the $status answer has no JSON code: $(body bad)"
grep -iq "^x-request-id: $rid" "$WORK/bad.head" || fail error-case "X-Request-ID $rid was not echoed"
ok "error case: $status $(grep -Eo '"code": ?"[a-z_]+"' "$WORK/bad.body")"

# 4. Metrics: the scrape counts at least one successful predict.
status=$(request metrics "$URL/metrics")
[ "$status" = 200 ] || fail metrics "GET /metrics answered $status: $(body metrics)"
line=$(grep -E '^serve_requests_total\{[^}]*route="/predict"[^}]*status="200"[^}]*\} ' "$WORK/metrics.body" | head -1)
[ -n "$line" ] || fail metrics "no serve_requests_total{route=\"/predict\",status=\"200\"} in /metrics"
count=${line##* }
[ "${count%%.*}" -ge 1 ] 2>/dev/null || fail metrics "the predict counter is $count, expected >= 1"
ok "metrics: $line"
echo "smoke: PASS $URL"
