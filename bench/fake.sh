# shellcheck shell=bash
# bench/fake.sh: sourced by bench/run.sh and bench/ab.sh. What both set up alike: the fast fake
# Qikchat they measure against (nginx answering Qikchat's success document), the nginx
# configuration pieces, the caller token and Qikchat key, and free ports.

TOKEN=bench-token-0123456789abcdef
# shellcheck disable=SC2034 # used by the scripts that source this file
KEY=bench-qikchat-key-0123456789
export BENCH_TOKEN=$TOKEN

free_ports() { # $1: how many. Prints that many free loopback ports on one line.
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
' "$1"
}

# Qikchat's answer to a send (shared/qikchat-api.md), as the fake gives it.
FAKE_ANSWER='{"status":true,"message":"Messages queued successfully","data":[{"id":"52JH6WmuSruAVyXvBBYemd0Ia","channel":"whatsapp","from":"918080808081","recipient":"+918080808080","credits":0.80,"created_at":"2023-02-19T12:52:25.222Z","status":"queued"}]}'

nginx_common() { # $1: directory, $2: workers
    cat << EOF
worker_processes $2;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
EOF
}

nginx_temp_paths() { # $1: directory
    local t
    for t in client_body proxy fastcgi uwsgi scgi; do
        printf '    %s_temp_path %s/tmp-%s;\n' "$t" "$1" "$t"
    done
}

fake_conf() { # $1: directory, $2: port. One worker, keep-alive, the answer above.
    nginx_common "$1" 1
    cat << EOF
http {
$(nginx_temp_paths "$1")
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_buffer_size 64k;
    server {
        listen 127.0.0.1:$2 backlog=4096;
        location = /v1/messages {
            default_type application/json;
            return 200 '$FAKE_ANSWER';
        }
    }
}
EOF
}
