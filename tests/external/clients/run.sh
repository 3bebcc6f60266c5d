#!/usr/bin/env bash
# Clients generated from openapi.yaml the way teams generate them, each built with its own
# language's compiler or type checker, then run against a sandbox relay: a text, media, a template,
# a status lookup, and a refused message read back as a typed Problem (`code`, `errors[0].field`).
#
#   openapi-generator python           clients/openapi_generator.py
#   openapi-generator typescript-fetch clients/typescript_fetch.ts    (tsc --strict)
#   openapi-generator go               clients/openapi_generator.go   (go build)
#   openapi-typescript + openapi-fetch clients/openapi_fetch.ts       (tsc --strict)
#   openapi-python-client              clients/openapi_python_client.py
#
# Usage: tests/external/clients/run.sh <relay URL> <token>. tests/external/run.sh installs the
# tools (their versions are pinned there) and calls this with PATH holding its virtualenv and
# NPM_PREFIX naming its npm folder. Generated code goes to target/clients/, rebuilt every run.
set -euo pipefail
cd "$(dirname "$0")/../../.."

BASE_URL=$1
TOKEN=$2
: "${NPM_PREFIX:?NPM_PREFIX names the npm folder holding typescript, openapi-typescript, openapi-fetch}"
HERE=tests/external/clients
OUT=$PWD/target/clients
TSC=$NPM_PREFIX/node_modules/.bin/tsc

START=$SECONDS
log() { printf '[clients %4ds] %s\n' "$((SECONDS - START))" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

rm -rf "$OUT"
mkdir -p "$OUT"

# Runs a generator quietly, showing its output only when it fails.
quietly() {
    local name=$1
    shift
    "$@" > "$OUT/$name.log" 2>&1 || { cat "$OUT/$name.log" >&2; die "$name failed"; }
}

generate() { # <generator> <output folder> [additional options]
    local generator=$1 output=$2
    shift 2
    quietly "openapi-generator-$generator" openapi-generator-cli generate --input-spec openapi.yaml \
        --generator-name "$generator" --output "$output" "$@"
}

# --- openapi-generator python ----------------------------------------------------------------
generate python "$OUT/python" --package-name qikchat_relay_client
python3 "$HERE/openapi_generator.py" "$OUT/python" "$BASE_URL" "$TOKEN"

# --- openapi-generator typescript-fetch --------------------------------------------------------
generate typescript-fetch "$OUT/typescript-fetch"
cp "$HERE/typescript_fetch.ts" "$OUT/typescript-fetch/check.ts"
(
    cd "$OUT/typescript-fetch"
    quietly tsc-typescript-fetch "$TSC" --strict --target es2020 --module commonjs --moduleResolution node \
        --lib es2020,dom --types node --typeRoots "$NPM_PREFIX/node_modules/@types" --outDir dist check.ts
    node dist/check.js "$BASE_URL" "$TOKEN"
)

# --- openapi-generator go --------------------------------------------------------------------
# The generated module needs gopkg.in/validator.v2, which Debian packages as source
# (golang-gopkg-validator.v2-dev); it is given to the module as a local replacement, so the build
# reaches no module proxy (none is reachable from CI).
generate go "$OUT/go" --package-name relay --git-host example.com --git-user-id qikchat --git-repo-id relay-go
validator=$OUT/go-validator
mkdir -p "$validator" "$OUT/go/check"
cp /usr/share/gocode/src/gopkg.in/validator.v2/{builtins.go,doc.go,validator.go} "$validator/"
printf 'module gopkg.in/validator.v2\n\ngo 1.18\n' > "$validator/go.mod"
cp "$HERE/openapi_generator.go" "$OUT/go/check/main.go"
(
    cd "$OUT/go"
    export GOPROXY=off GOFLAGS=-mod=mod GOPATH=$OUT/gopath GOCACHE=$OUT/gocache
    go mod edit -replace "gopkg.in/validator.v2=$validator"
    quietly go-build go build -o "$OUT/go-check" ./check
)
"$OUT/go-check" "$BASE_URL" "$TOKEN"

# --- openapi-typescript + openapi-fetch --------------------------------------------------------
mkdir -p "$OUT/openapi-fetch"
quietly openapi-typescript "$NPM_PREFIX/node_modules/.bin/openapi-typescript" openapi.yaml \
    --output "$OUT/openapi-fetch/schema.d.ts"
cp "$HERE/openapi_fetch.ts" "$OUT/openapi-fetch/check.ts"
ln -s "$NPM_PREFIX/node_modules" "$OUT/openapi-fetch/node_modules"
(
    cd "$OUT/openapi-fetch"
    quietly tsc-openapi-fetch "$TSC" --strict --target es2022 --module nodenext --moduleResolution nodenext \
        --lib es2022,dom --types node --outDir dist check.ts
    node dist/check.js "$BASE_URL" "$TOKEN"
)

# --- openapi-python-client -------------------------------------------------------------------
quietly openapi-python-client openapi-python-client generate --path openapi.yaml \
    --output-path "$OUT/openapi-python-client/client" --meta none
python3 "$HERE/openapi_python_client.py" "$OUT/openapi-python-client" "$BASE_URL" "$TOKEN"

log "five generated clients built and talked to the relay"
