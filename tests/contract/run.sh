#!/usr/bin/env bash
# Contract tests of the REST API against the OpenAPI document it serves.
#
#   tests/contract/run.sh BASE_URL OWNER_KEY MEMBER_KEY OUTDIR
#
# 1. downloads BASE_URL/api/v1/openapi.json and validates it with openapi-spec-validator;
# 2. runs Schemathesis against BASE_URL with that document (every check, every phase:
#    examples, coverage, fuzzing and stateful), once as an Organization Owner's API key and
#    once as a member's (a member's 403 on owner-only writes is documented behaviour);
# 3. generates a Python client from the document with openapi-python-client and runs
#    tests/contract/client_e2e.py with it.
# Every step runs; the script exits non-zero if any failed, after saying which.
#
# The server under test:
# - must use the built-in local KMS (CMEK_ENV is not production) for step 3, which creates a
#   Local KMS key through the API.
# - should not deliver webhooks: Schemathesis creates webhooks with URLs it makes up (any
#   https URL is accepted in development) and sends test events to them. Start a debug build
#   with CMEK_TEST_WORKER_FAULTS=webhook-deliveries so that no delivery leaves the machine.
# - should have AWS KMS and Azure Key Vault configured, or the policy and Azure setup
#   operations answer 422 "not configured" to valid requests. Point them at loopback so that
#   nothing leaves the machine: the moto server and Azure stand-in scripts/test starts, or
#   addresses where nothing listens (CMEK_AWS_ACCOUNT_ID=123456789012
#   AWS_ENDPOINT_URL=http://127.0.0.1:9 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
#   CMEK_AZURE_APP_ID=<a GUID> CMEK_AZURE_CLIENT_SECRET=test
#   AZURE_AUTHORITY_HOST=https://127.0.0.1:9 CMEK_AZURE_VAULT_URL_TEMPLATE='https://127.0.0.1:9/{vault}').
#
# On the 2-core machine, against the document served today: about 12 s per key, 30 s in all.
#
# Settings (environment): CMEK_CONTRACT_VENV (default ~/.cache/cmek-console/contract-venv,
# created from requirements.txt when missing or out of date), CMEK_CONTRACT_SEED (default
# 20240601), CMEK_CONTRACT_MAX_EXAMPLES (default 20 per operation in the examples, coverage and
# fuzzing phases; the stateful phase's bounds are in schemathesis.toml),
# CMEK_CONTRACT_TIME_LIMIT (default 240 s per key: Schemathesis is interrupted then, and that
# counts as a failure), CMEK_CONTRACT_WORKERS (default 1), CMEK_CONTRACT_DOCUMENT (a file to
# use instead of the served document, to try a change to it before the server serves it).
set -Eeuo pipefail

if (($# != 4)); then
  echo "usage: $0 BASE_URL OWNER_KEY MEMBER_KEY OUTDIR" >&2
  exit 2
fi
base_url=${1%/}
owner_key=$2
member_key=$3
outdir=$4

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=${CMEK_CONTRACT_VENV:-$HOME/.cache/cmek-console/contract-venv}
seed=${CMEK_CONTRACT_SEED:-20240601}
max_examples=${CMEK_CONTRACT_MAX_EXAMPLES:-20}
# A hard bound per key; the counts above keep a run well under it (see schemathesis.toml).
time_limit=${CMEK_CONTRACT_TIME_LIMIT:-240}
# One worker: with two, Hypothesis (parsing source with Python 3.11's ast module from
# Schemathesis's threads) failed an operation with "SystemError: AST constructor recursion
# depth mismatch", a CPython 3.11 bug; the server is on the same 2 cores anyway.
workers=${CMEK_CONTRACT_WORKERS:-1}
failures=()

say() { printf '\n==> %s\n' "$*"; }
failed() { failures+=("$1"); printf '\nFAILED: %s\n' "$1" >&2; }

mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)

# The virtualenv, (re)installed when requirements.txt changed since it was made.
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)
if [[ ! -x $venv/bin/python || ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  say "Installing $here/requirements.txt into $venv"
  [[ -x $venv/bin/python ]] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"
  echo "$want" >"$stamp"
fi
py="$venv/bin/python"

# --- 1. The document, validated -------------------------------------------------------
doc="$outdir/openapi.json"
source="$base_url/api/v1/openapi.json"
if [[ -n ${CMEK_CONTRACT_DOCUMENT:-} ]]; then
  source="file://$(cd "$(dirname "$CMEK_CONTRACT_DOCUMENT")" && pwd)/$(basename "$CMEK_CONTRACT_DOCUMENT")"
  echo "CMEK_CONTRACT_DOCUMENT: testing the server against $source, not the document it serves" >&2
fi
say "Downloading $source"
if ! "$py" - "$source" "$doc" <<'EOF'
import json, sys, urllib.request
url, path = sys.argv[1], sys.argv[2]
with urllib.request.urlopen(url, timeout=30) as answer:
    if getattr(answer, "status", None) not in (None, 200):  # None: a file:// URL
        sys.exit(f"{url}: HTTP {answer.status}")
    body = answer.read()
document = json.loads(body)
with open(path, "wb") as f:
    f.write(body)
print(f"OpenAPI {document.get('openapi')}, {sum(len(v) for v in document.get('paths', {}).values())} operations on {len(document.get('paths', {}))} paths")
EOF
then
  echo "could not download the document" >&2
  exit 1
fi

# Its command line stops at the first unresolvable $ref and prints the whole document with
# it; validate_spec.py runs the same validator and lists every error briefly.
say "openapi-spec-validator $("$venv/bin/pip" show openapi-spec-validator | awk '/^Version/ {print $2}')"
if "$py" "$here/validate_spec.py" "$doc" >"$outdir/openapi-spec-validator.txt" 2>&1; then
  cat "$outdir/openapi-spec-validator.txt"
else
  cat "$outdir/openapi-spec-validator.txt" >&2
  failed "openapi-spec-validator found errors in the document"
fi

# --- 2. Schemathesis, as an owner and as a member ---------------------------------------
# Nothing is excluded: GET /api/v1/openapi.json is tested like every other operation.
schemathesis() {
  local role=$1 key=$2 dir="$outdir/schemathesis-$1"
  mkdir -p "$dir"
  say "Schemathesis as the $role (seed $seed, $max_examples examples per operation and phase)"
  local start=$SECONDS status=0
  # SIGINT: Schemathesis stops as if interrupted and still writes its reports.
  timeout --signal=INT --kill-after=30 "$time_limit" \
    "$venv/bin/schemathesis" --config-file "$here/schemathesis.toml" run "$doc" \
    --url "$base_url" \
    --header "Authorization: Bearer $key" \
    --checks all \
    --phases examples,coverage,fuzzing,stateful \
    --seed "$seed" \
    --max-examples "$max_examples" \
    --workers "$workers" \
    --generation-database none \
    --report junit,ndjson,har \
    --report-dir "$dir" \
    --no-color \
    >"$dir/output.txt" 2>&1 || status=$?
  tail -n 12 "$dir/output.txt"
  echo "(${role}: $((SECONDS - start)) s; full output $dir/output.txt, reports in $dir)"
  if ((status == 124 || status == 137)); then
    echo "Schemathesis as the $role ran past $time_limit s and was stopped" >&2
  fi
  if ((status != 0)); then
    "$py" "$here/summarize.py" "$dir"/ndjson-*.ndjson >&2 || true
    echo "Reproduce the failures with:" >&2
    grep -E '^\s*(\[[0-9]{3}\] )?curl ' "$dir/output.txt" >&2 || true
    failed "Schemathesis as the $role (exit $status)"
  fi
}
schemathesis owner "$owner_key"
schemathesis member "$member_key"

# --- 3. A generated client, end to end ---------------------------------------------------
say "openapi-python-client $("$venv/bin/pip" show openapi-python-client | awk '/^Version/ {print $2}')"
rm -rf "$outdir/client"
mkdir -p "$outdir/client"
if "$venv/bin/openapi-python-client" generate --path "$doc" --meta none \
  --config "$here/client-config.yaml" \
  --output-path "$outdir/client/cmek_console_client" --overwrite --fail-on-warning \
  >"$outdir/client-generate.txt" 2>&1; then
  cat "$outdir/client-generate.txt"
  say "client_e2e.py with the generated client"
  if ! PYTHONPATH="$outdir/client" "$py" "$here/client_e2e.py" "$base_url" "$owner_key"; then
    failed "client end to end"
  fi
else
  cat "$outdir/client-generate.txt" >&2
  failed "openapi-python-client could not generate a client from the document"
fi

if ((${#failures[@]})); then
  printf '\ntests/contract: %d failed:\n' "${#failures[@]}" >&2
  printf '  - %s\n' "${failures[@]}" >&2
  exit 1
fi
printf '\ntests/contract: every step passed\n'
