#!/usr/bin/env bash
# The whole benchmark suite in one command: installs what it needs, then runs benchmarks/run.py.
#   bash benchmarks/run.sh            # full run (25-40 min), writes benchmarks/results/<date>_<time>.md
#   bash benchmarks/run.sh --quick    # smoke test (~3 min), writes benchmarks/.work/results/
#   bash benchmarks/run.sh --instructions   # callgrind instruction counts instead (~12 min), see instructions.py
#   bash benchmarks/run.sh --redis-clients  # the Redis rate limit through RedisWire, redis-py and coredis
# Any other option is passed to run.py (see: bash benchmarks/run.sh --help).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root=()
if [ "$(id -u)" -ne 0 ]; then as_root=(sudo); fi

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_http_echo_module.so ] || missing+=(libnginx-mod-http-echo)
command -v taskset >/dev/null || missing+=(util-linux)
command -v redis-server >/dev/null || missing+=(redis-server)  # for asgigate-rl-redis
if [[ " $* " == *" --instructions "* ]]; then command -v valgrind >/dev/null || missing+=(valgrind); fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing with apt-get: ${missing[*]}" >&2
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "creating .venv" >&2
    python3 -m venv .venv
    .venv/bin/pip install -q -e '.[dev]' aiohttp asgiproxy
fi
if ! .venv/bin/python -c 'import uvicorn, uvloop, httptools, aiohttp, asgiproxy, redis, hiredis' 2>/dev/null; then
    echo "installing the Python peers into .venv" >&2
    .venv/bin/pip install -q 'uvicorn[standard]' uvloop httptools aiohttp asgiproxy 'redis[hiredis]>=8'
fi
if ! .venv/bin/python -c 'import joserfc, limits, coredis' 2>/dev/null; then
    echo "installing asgigate's auth and rate limit extras into .venv" >&2
    .venv/bin/pip install -q -e '.[auth,ratelimit]'
fi

exec .venv/bin/python benchmarks/run.py "$@"
