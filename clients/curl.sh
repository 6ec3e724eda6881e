#!/usr/bin/env bash
# The HTTP /v1 shim with curl: health, ingest a CSV, SQL as JSON and CSV, datasets.
#
#   bash clients/curl.sh --http http://127.0.0.1:3110 [--csv FILE] [--name NAME]
#
# Needs curl and bash only. With tokens configured on the server, export
# FLIGHTLAKE_TOKEN=<token> first. Every error is JSON: {"error": "...", "status": N}.
set -euo pipefail

HTTP=http://127.0.0.1:3110
CSV="$(dirname "$0")/data/sales.csv"
NAME=example_sales_http
while [ $# -gt 0 ]; do
  case "$1" in
    --http) HTTP="$2"; shift 2 ;;
    --csv) CSV="$2"; shift 2 ;;
    --name) NAME="$2"; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

# --fail-with-body: exit non-zero on an HTTP error, but still print its JSON body.
CURL=(curl --silent --show-error --fail-with-body)
if [ -n "${FLIGHTLAKE_TOKEN:-}" ]; then
  CURL+=(-H "Authorization: Bearer ${FLIGHTLAKE_TOKEN}")
fi

echo "== health"
"${CURL[@]}" "$HTTP/health"
echo

echo "== ingest $CSV as $NAME (mode=overwrite: re-running replaces it)"
"${CURL[@]}" -F "file=@${CSV};type=text/csv" "$HTTP/v1/ingest?name=${NAME}&mode=overwrite"
echo

# The sample's own questions when the file has its columns; otherwise ones about the first
# column of the file's header (any CSV works with --csv).
HEADER="$(head -n 1 "$CSV" | tr -d '\r')"
case ",${HEADER}," in
  *,state,*product,*quantity,*unit_price,*)
    JSON_SQL="SELECT state, count(*) AS orders, sum(quantity * unit_price) AS revenue FROM ${NAME} GROUP BY state ORDER BY state"
    CSV_SQL="SELECT product, sum(quantity) AS units FROM ${NAME} GROUP BY product ORDER BY product" ;;
  *)
    FIRST="${HEADER%%,*}"; FIRST="${FIRST//\"/}"
    JSON_SQL="SELECT count(*) AS rows FROM ${NAME}"
    CSV_SQL="SELECT \\\"${FIRST}\\\" AS value, count(*) AS n FROM ${NAME} GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5" ;;
esac

echo "== sql -> JSON rows"
"${CURL[@]}" -H 'Content-Type: application/json' -d "{\"sql\": \"${JSON_SQL}\"}" "$HTTP/v1/sql"
echo

echo "== sql -> CSV"
"${CURL[@]}" -H 'Content-Type: application/json' -H 'Accept: text/csv' \
  -d "{\"sql\": \"${CSV_SQL}\"}" "$HTTP/v1/sql"

echo "== datasets"
"${CURL[@]}" "$HTTP/v1/datasets"
echo

echo "== one dataset's manifest"
"${CURL[@]}" "$HTTP/v1/datasets/${NAME}"
echo

echo "== errors are JSON with a status"
"${CURL[@]}" -H 'Content-Type: application/json' -d '{"sql": "SELECT * FROM no_such_dataset"}' \
  "$HTTP/v1/sql" || true
echo
