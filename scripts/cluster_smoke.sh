#!/usr/bin/env bash
# Exercise the cluster commands of README.md ("Running on a cluster") on this one machine, over
# loopback: an SSH server on 127.0.0.1, `ray up` of scripts/cluster_local.yaml with this machine
# as the head, the SSH tunnel of `ray dashboard`, `ray job submit` of a smoke search, the report
# fetched with `ray rsync-down`, then `ray exec ... 'ray stop'` and `ray down`.
#
#   sudo bash scripts/cluster_smoke.sh        # root: it starts sshd (apt-installs it if missing)
#
# Isolation: after installing what is missing, the script runs in a network namespace of its
# own that has only a loopback interface, so everything it starts (sshd, Ray's head, the
# dashboard, the tunnel) listens on a 127.0.0.1 that nothing outside can reach; Ray's default
# ports cannot meet another Ray of this machine there. The SSH server also gets a PID namespace:
# every process the launcher starts through it (the Ray head included) lives in it, so
# `ray stop` sees only this run's Ray, and ending the server ends them all.
#
# What it changes from scripts/cluster_local.yaml, and why:
# - head_ip 127.0.0.1, no workers, the SSH user root with a key made for this run;
# - the project is synced into this run's folder; setup_commands only checks the virtualenv that
#   runs this script (this machine has the project installed; installing torch again would prove
#   nothing about the launcher); the job runs the synced copy (PYTHONPATH) with that venv's
#   python, named in full: this machine's ~/.bashrc, which Ray's workers re-read, puts other
#   Pythons first on PATH;
# - a token of its own for Ray's token authentication, not the one in ~/.ray;
# - ray start gets --node-ip-address=127.0.0.1 and a temp dir of its own.
# CXR_SMOKE_KEEP=1 keeps the run's folder (configs, logs, results) for a look afterwards.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${CXR_TUNE_VENV:-$REPO/.venv}"
PY="$VENV/bin/python"
RAY="$VENV/bin/ray"
DASHBOARD_PORT=8265 # as in scripts/cluster_local.yaml
TUNNEL_PORT=8266    # the local end of `ray dashboard`'s tunnel (same machine, so not 8265)

say() { printf '\n== %s\n' "$*"; }
die() {
    printf 'cluster_smoke: %s\n' "$*" >&2
    exit 1
}

install_packages() {
    local missing=()
    [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
    command -v rsync >/dev/null || missing+=(rsync)
    [ ${#missing[@]} -eq 0 ] && return
    say "installing ${missing[*]}"
    # Keep the package's own sshd (on 0.0.0.0:22) from starting: only ours runs.
    local guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        guard=/usr/sbin/policy-rc.d
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    [ -z "$guard" ] || rm -f "$guard"
}

if [ "${1:-}" != "--in-namespace" ]; then
    [ "$(id -u)" -eq 0 ] || die "run as root (it starts an SSH server and a network namespace)"
    [ -x "$RAY" ] || die "no Ray at $RAY; set CXR_TUNE_VENV to the project's virtualenv"
    install_packages
    exec unshare --net -- bash "$0" --in-namespace
fi

ip link set lo up

WORK="$(mktemp -d /tmp/cxr_smoke.XXXXXX)"
chmod 700 "$WORK"
mkdir -p "$WORK/ssh" "$WORK/node" "$WORK/results" "$WORK/fetched" "$WORK/tmp" "$WORK/cache"
# Short paths: Ray's unix sockets live under its temp dir.
export RAY_TMPDIR="$WORK/tmp" TMPDIR="$WORK/tmp"
CONFIG="$WORK/cluster.yaml"
SSH=(ssh -q -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
    -i "$WORK/ssh/id_ed25519" root@127.0.0.1)
SSHD_PID=""
TUNNEL_PID=""
RAY_UP=0
BOOTSTRAP_FILES=()
for f in /root/ray_bootstrap_config.yaml /root/ray_bootstrap_key.pem; do
    [ -e "$f" ] || BOOTSTRAP_FILES+=("$f")
done

cleanup() {
    local rc=$?
    set +e
    say "cleaning up"
    [ -z "$TUNNEL_PID" ] || kill "$TUNNEL_PID" 2>/dev/null
    if [ "$RAY_UP" -eq 1 ]; then
        # The local provider's `ray down` leaves Ray running on the head: stop it first.
        "$RAY" exec "$CONFIG" "$RAY stop" 2>&1 | tail -n 2
        "$RAY" down -y "$CONFIG" 2>&1 | tail -n 2
    fi
    if [ -n "$SSHD_PID" ]; then
        # sshd is its PID namespace's first process: its end ends all started through it.
        # (unshare ignores SIGTERM; --kill-child passes its own death on to sshd.)
        kill -KILL "$SSHD_PID" 2>/dev/null
        wait "$SSHD_PID" 2>/dev/null
    fi
    # ray up leaves these in the SSH user's home; remove only those this run created.
    for f in "${BOOTSTRAP_FILES[@]}"; do rm -f "$f"; done
    if [ "${CXR_SMOKE_KEEP:-0}" = 1 ]; then
        echo "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    echo "cluster_smoke: exit $rc"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "SSH server on 127.0.0.1:22 (network namespace: $(ip -brief addr | awk '{print $1}' | paste -sd' '))"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/id_ed25519"
cp "$WORK/ssh/id_ed25519.pub" "$WORK/ssh/authorized_keys"
cat >"$WORK/ssh/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port 22
HostKey $WORK/ssh/host_key
PidFile $WORK/ssh/sshd.pid
AuthorizedKeysFile $WORK/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowUsers root
AllowTcpForwarding local
X11Forwarding no
PrintMotd no
EOF
mkdir -p /run/sshd
unshare --pid --fork --kill-child --mount-proc /usr/sbin/sshd -D -e \
    -f "$WORK/ssh/sshd_config" 2>"$WORK/ssh/sshd.log" &
SSHD_PID=$!
for _ in $(seq 50); do
    "${SSH[@]}" true 2>/dev/null && break
    sleep 0.2
done
"${SSH[@]}" 'echo "ssh: $(whoami)@127.0.0.1 answers; its PID namespace holds $(ps -e --no-headers | wc -l) processes"'

say "cluster config from scripts/cluster_local.yaml"
"$PY" -c 'import secrets; print(secrets.token_hex(32), end="")' >"$WORK/auth_token"
chmod 600 "$WORK/auth_token"
# What `ray job submit` needs to reach a cluster with token authentication.
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$WORK/auth_token"
"$PY" - "$REPO/scripts/cluster_local.yaml" "$CONFIG" "$VENV" "$WORK" "$REPO" <<'EOF'
import sys

import yaml

template, target, venv, work, repo = sys.argv[1:]
config = yaml.safe_load(open(template))
config["cluster_name"] = f"cxr-smoke-{work.rsplit('.', 1)[-1]}"
config["provider"].update(head_ip="127.0.0.1", worker_ips=[])
config["auth"] = {"ssh_user": "root", "ssh_private_key": f"{work}/ssh/id_ed25519"}
config["file_mounts"] = {
    f"{work}/node/cxr_tune": repo,
    f"{work}/node/auth_token": f"{work}/auth_token",
}
config["setup_commands"] = [
    f"{venv}/bin/python -c 'import cxr_tune, ray; print(\"node ready: ray\", ray.__version__)'",
    f"test -f {work}/node/cxr_tune/cxr_tune/search/cli.py && echo 'project synced'",
]


def localise(command: str) -> str:
    command = command.replace("ray stop", f"{venv}/bin/ray stop")
    command = command.replace(
        "RAY_AUTH_MODE=token ray start",
        f"RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={work}/node/auth_token {venv}/bin/ray start",
    )
    if "--head" in command:
        command += f" --node-ip-address=127.0.0.1 --temp-dir={work}/tmp/head"
    return command


for key in ("head_start_ray_commands", "worker_start_ray_commands"):
    config[key] = [localise(c) for c in config[key]]
yaml.safe_dump(config, open(target, "w"), sort_keys=False, width=200)
EOF
grep -E "head_ip|ssh_user|ray start --head" "$CONFIG" | sed 's/^/    /'

say "ray up -y"
RAY_UP=1
"$RAY" up -y --no-config-cache "$CONFIG" >"$WORK/ray_up.log" 2>&1 || {
    tail -n 30 "$WORK/ray_up.log"
    die "ray up failed"
}
grep -E "^(node ready|project synced)|Local node IP|Ray runtime started" "$WORK/ray_up.log" |
    sed -E 's/\x1b\[[0-9;]*m//g' 

say "ray dashboard: SSH tunnel 127.0.0.1:$TUNNEL_PORT -> the head's 127.0.0.1:$DASHBOARD_PORT"
"$RAY" dashboard --port "$TUNNEL_PORT" --remote-port "$DASHBOARD_PORT" "$CONFIG" \
    >"$WORK/tunnel.log" 2>&1 &
TUNNEL_PID=$!
ADDRESS="http://127.0.0.1:$TUNNEL_PORT"
for _ in $(seq 60); do
    "$RAY" job list --address "$ADDRESS" >/dev/null 2>&1 && break
    sleep 0.5
done
"$RAY" job list --address "$ADDRESS" >/dev/null 2>&1 || die "no job server behind the tunnel"
echo "jobs via the tunnel, with the token: answered"
RAY_AUTH_MODE=disabled "$PY" - "$TUNNEL_PORT" <<'EOF'
import sys
import urllib.error
import urllib.request

try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/jobs/", timeout=5)
    print("jobs via the tunnel, without the token: answered (token authentication is off!)")
except urllib.error.HTTPError as exc:
    print(f"jobs via the tunnel, without the token: HTTP {exc.code}")
EOF

say "ray job submit: a smoke search"
STORAGE="$WORK/results"
"$RAY" job submit --address "$ADDRESS" \
    --runtime-env-json "{\"env_vars\": {\"PYTHONPATH\": \"$WORK/node/cxr_tune\"}}" \
    -- "$PY" -m cxr_tune.search --space smoke --profile smoke --storage "$STORAGE" \
    --name smoke --cache-dir "$WORK/cache" 2>&1 |
    grep -E "^(profile|data|search|evaluate|trials|report|note)|Connected to Ray|epoch [0-9]|Job '" |
    sed -E 's/\x1b\[[0-9;]*m//g'
[ -f "$STORAGE/smoke/report.md" ] || die "the job wrote no report"

say "ray rsync-down: the report"
"$RAY" rsync-down "$CONFIG" "$STORAGE/smoke/report.md" "$WORK/fetched/" >/dev/null 2>&1
"$RAY" rsync-down "$CONFIG" "$STORAGE/smoke/cxr_tune.json" "$WORK/fetched/" >/dev/null 2>&1
[ -s "$WORK/fetched/report.md" ] || die "no report.md came back"
grep -E "^- (trials|cells|space):" "$WORK/fetched/report.md"
"$PY" - "$WORK/fetched/cxr_tune.json" <<'EOF'
import json
import sys

record = json.load(open(sys.argv[1]))
print(f"record: {record['name']}, finished at {record.get('finished_at')}")
EOF

say "ray exec 'ray stop'; ray down -y"
"$RAY" exec "$CONFIG" "$RAY stop" 2>&1 | grep -E "Stopped|stopped all|Did not find" | sed -E 's/\x1b\[[0-9;]*m//g' | tail -n 1
"$RAY" down -y "$CONFIG" 2>&1 | grep -E "nodes remaining|No nodes" | sed -E 's/\x1b\[[0-9;]*m//g' | tail -n 1
RAY_UP=0
"${SSH[@]}" 'echo "left in the SSH server namespace: $(ps -e --no-headers -o comm | sort | uniq -c | paste -sd" ")"'
say "smoke passed"
