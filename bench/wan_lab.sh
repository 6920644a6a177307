#!/usr/bin/env bash
# wan_lab.sh: N hosts joined by emulated WAN links, in network namespaces on this machine.
#
# Usage: bench/wan_lab.sh COMMAND [ARGS]       (root: it creates namespaces and qdiscs)
#
#   up [-n HOSTS] [--rtt MS] [--rate MBIT] [--loss PCT] [--queue-ms MS] [--cc ALGO]
#      [--mtu BYTES] [--no-offload] [--delay-line auto|netem|userspace]
#      [--lifetime SECONDS] [--dry-run]
#                      Build the lab (defaults: 4 hosts, RTT 80 ms, 1000 Mbit/s, no loss,
#                      50 ms bottleneck queue, the kernel's congestion control). Every pair
#                      of hosts sees --rtt, min(--rate) each way and about --loss % per
#                      direction. --no-offload makes every packet a loss candidate (no GSO
#                      super-packets; more CPU). --dry-run prints the commands instead of
#                      running them (no privileges needed). A failed or interrupted `up`
#                      removes whatever it had created.
#   down               Stop the lab's processes and delete the namespaces `up` created.
#   run [UP OPTIONS] -- CMD [ARGS]
#                      up, run CMD (in this namespace; it may call `exec`), then down,
#                      whatever way CMD ends. Exits with CMD's status.
#   status             Parameters, per-host table, queue and delay-line counters.
#   check              Say which delay line this machine supports and what is missing.
#   ip I               Print host I's address.
#   exec I CMD [ARGS]  Run CMD inside host I.
#   rtt I J [COUNT]    Median time of COUNT (5) TCP connection attempts from host I to a
#                      closed port of host J: one round trip each.
#   set I [--delay-ms MS] [--rate MBIT] [--loss PCT]
#                      Change host I's access link while the lab runs (MS one way, each
#                      direction; PCT per direction on this link).
#   cut I [drop|down]  Isolate host I: drop = silently discard its traffic both ways (peers
#                      see only timeouts); down = take its link down (no carrier).
#   restore I          Undo `cut I`.
#   pair I J RTT_MS|off [RATE_MBIT]
#                      Override the RTT between hosts I and J (both directions; the
#                      userspace delay line only: netem shapes access links, not
#                      paths), and with RATE_MBIT give the path a bottleneck of its own
#                      (each direction, a --queue-ms tail-drop buffer) below the access
#                      links' rates; `off` removes the override. Loss stays per link.
#   cutpair I J        Silently discard traffic between hosts I and J only.
#   restorepair I J    Undo `cutpair I J`.
#   help               This text.
#
# Topology: a router namespace PREFIX-r and host namespaces PREFIX-h1..N; host i is
# SUBNET.i.2 on its eth0, a veth to the router. Host i's access link has a one-way delay
# D_i, a rate R_i and a loss P_i in each direction, applied in the router (shaping in
# the sender's own namespace would hold packets against TCP Small Queues). Between hosts
# i and j: RTT = 2 (D_i + D_j), rate min(R_i, R_j), loss ~ P_i + P_j per direction; `up`
# sets D = rtt/4 and P = loss/2 on every host. Rates: HTB on the router's side of the
# veth (towards the host) and on an IFB fed from its ingress (from the host).
# Delay and loss:
#   netem      tc netem under the HTB class of each direction (the kernel's own).
#   userspace  kernels without sch_netem: iptables hands every forwarded packet of path
#              i->j to NFQUEUE i*256+j, where bench/wan_delay.py holds it D_i + D_j and
#              drops it with probability 1-(1-P_i)(1-P_j). A bfifo of --queue-ms is the
#              bottleneck buffer. Needs iptables and python3.
#   auto       netem if the kernel has it, else userspace; with --rtt 0 --loss 0 and no
#              netem, none (no delay line, no iptables needed: rates and cuts only).
# Cuts are policy-routing blackholes in the router (no iptables needed).
#
# Environment: WAN_LAB_PREFIX (wl), WAN_LAB_SUBNET (10.77; hosts SUBNET.1.2 ...),
# WAN_LAB_STATE (/tmp/wan_lab.PREFIX), WAN_LAB_PYTHON (python3).
#
# The lab only touches what it created: `up` refuses to start if a namespace of its
# names exists, records the namespaces it adds, and `down` deletes only those. One
# exception, logged when it happens: a namespace may only pick a congestion control
# listed in net.ipv4.tcp_allowed_congestion_control, so --cc ALGO adds ALGO to that
# list for the moment it takes to set it in each host, then restores the list.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PREFIX=${WAN_LAB_PREFIX:-wl}
SUBNET=${WAN_LAB_SUBNET:-10.77}
STATE=${WAN_LAB_STATE:-/tmp/wan_lab.$PREFIX}
PYTHON=${WAN_LAB_PYTHON:-python3}
ROUTER=$PREFIX-r
DRY_RUN=0

host_ns() { echo "$PREFIX-h$1"; }
log() { echo "wan_lab: $*" >&2; }
die() { echo "wan_lab: $*" >&2; exit 1; }
usage_error() { echo "wan_lab: $* (usage: $0 help)" >&2; exit 2; }
usage() { awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; }

# Run a command, or print it under --dry-run.
x() {
    if [ "$DRY_RUN" = 1 ]; then echo "+ $*"; else "$@"; fi
}
in_router() { x ip netns exec "$ROUTER" "$@"; }

is_number() { [[ $1 =~ ^[0-9]+([.][0-9]+)?$ ]]; }
is_count() { [[ $1 =~ ^[0-9]+$ ]]; }
calc() { awk "BEGIN { printf \"%s\", ($1) }"; }  # calc 'EXPR': awk arithmetic, printed

need_root() {
    [ "$(id -u)" = 0 ] || die "needs root (it creates network namespaces and qdiscs): run it with sudo"
}
need_tools() {
    local missing=() tool
    for tool in "$@"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
    [ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}: install them (ip, tc: iproute2; iptables; python3)"
}
lab_is_up() { [ -f "$STATE/namespaces" ]; }
need_lab() { lab_is_up || die "lab '$PREFIX' is not up (start it with: $0 up)"; }
need_host() {
    is_count "$1" && [ "$1" -ge 1 ] && [ "$1" -le "$(wc -l <"$STATE/hosts")" ] \
        || usage_error "no host '$1' in lab '$PREFIX'"
}

# --------------------------------------------------------------- state -----
# $STATE/hosts: one line per host, "I DELAY_MS RATE_MBIT LOSS_PCT CUT" (CUT: 0|drop|down)
host_field() { awk -v i="$1" -v f="$2" '$1 == i {print $f}' "$STATE/hosts"; }
set_host_field() {
    awk -v i="$1" -v f="$2" -v v="$3" '$1 == i {$f = v} {print}' "$STATE/hosts" >"$STATE/hosts.new"
    mv "$STATE/hosts.new" "$STATE/hosts"
}
delay_line() { cat "$STATE/delay_line"; }

# ------------------------------------------------------------- shaping -----
# shape DEV RATE_MBIT DELAY_MS LOSS_PCT: one direction of one access link.
# netem: HTB (if RATE > 0) with netem as its leaf; userspace: HTB with a bfifo of
# --queue-ms as its leaf (delay and loss happen in the delay line).
shape() {
    local dev=$1 rate=$2 delay=$3 loss=$4 qms leaf burst kind
    qms=$(cat "$STATE/queue_ms")
    if [ "$(delay_line)" = netem ]; then
        # limit (packets): what is in flight during the delay plus the queue, at full-size packets
        leaf="netem delay ${delay}ms loss ${loss}% limit $(calc "int(($rate > 0 ? $rate : 10000) * 125 * ($delay + $qms) / 1500) * 2 + 1000")"
    else
        leaf="bfifo limit $(calc "int($rate * 125 * $qms) > 262144 ? int($rate * 125 * $qms) : 262144")"
    fi
    kind=""  # the root qdisc now: htb (shaped), netem (unshaped), other (the device's default)
    [ "$DRY_RUN" = 1 ] || kind=$(tc -n "$ROUTER" qdisc show dev "$dev" root | awk '{print $2; exit}')
    if [ "$(calc "$rate > 0")" = 1 ]; then
        if [ "$kind" != htb ]; then  # htb cannot be changed in place, only created
            [ "$kind" != netem ] || x tc -n "$ROUTER" qdisc del dev "$dev" root
            x tc -n "$ROUTER" qdisc add dev "$dev" root handle 1: htb default 1
        fi
        burst=$(calc "int($rate * 250) > 131072 ? int($rate * 250) : 131072")  # >= 2 ms, >= 2 GSO packets
        x tc -n "$ROUTER" class replace dev "$dev" parent 1: classid 1:1 htb rate "${rate}mbit" \
            ceil "${rate}mbit" burst "$burst" cburst "$burst" quantum 60000
        set_leaf "$dev" $leaf
    else
        [ "$kind" != htb ] || x tc -n "$ROUTER" qdisc del dev "$dev" root
        [ "$(delay_line)" != netem ] || x tc -n "$ROUTER" qdisc replace dev "$dev" root handle 2: $leaf
    fi
}

# set_leaf DEV KIND PARAMS...: the qdisc under DEV's HTB class. netem changes in
# place; a bfifo cannot, so a new one replaces it (what it held is dropped).
set_leaf() {
    local dev=$1; shift
    if [ "$1" = bfifo ] && [ "$DRY_RUN" = 0 ] &&
       tc -n "$ROUTER" qdisc show dev "$dev" parent 1:1 | grep -q "^qdisc bfifo"; then
        tc -n "$ROUTER" qdisc del dev "$dev" parent 1:1 handle 10:
        x tc -n "$ROUTER" qdisc add dev "$dev" parent 1:1 handle 10: "$@"
    else
        x tc -n "$ROUTER" qdisc replace dev "$dev" parent 1:1 handle 10: "$@"
    fi
}

# Both directions of host I's access link: towards the host on the router's veth end
# h<I>, from the host on the IFB u<I> that the router's ingress from h<I> feeds.
shape_host() {
    local i=$1 delay rate loss
    delay=$(host_field "$i" 2); rate=$(host_field "$i" 3); loss=$(host_field "$i" 4)
    shape "h$i" "$rate" "$delay" "$loss"
    shape "u$i" "$rate" "$delay" "$loss"
}

# The delay line's table: "QUEUE DELAY_MS LOSS_PROBABILITY RATE_MBIT QUEUE_MS" per path
# i->j; a `pair` override ($STATE/pairs: "I J ONE_WAY_MS RATE_MBIT") replaces D_i + D_j
# and sets the path's own bottleneck (RATE_MBIT 0: none).
write_delay_conf() {
    touch "$STATE/pairs"
    awk -v qms="$(cat "$STATE/queue_ms")" '
         FILENAME == ARGV[1] {o[$1 " " $2] = o[$2 " " $1] = $3; r[$1 " " $2] = r[$2 " " $1] = $4 + 0; next}
         {d[$1] = $2; p[$1] = $4 / 100} END {
        for (i in d) for (j in d) if (i != j) {
            delay = (i " " j) in o ? o[i " " j] : d[i] + d[j]
            rate = (i " " j) in r ? r[i " " j] : 0
            printf "%d %.3f %.6f %g %g\n", i * 256 + j, delay, 1 - (1 - p[i]) * (1 - p[j]), rate, qms
        }
    }' "$STATE/pairs" "$STATE/hosts" | sort -n >"$STATE/delay.conf.new"
    mv "$STATE/delay.conf.new" "$STATE/delay.conf"
}

delay_pid() { cat "$STATE/delay.pid" 2>/dev/null || true; }
delay_alive() {
    local pid; pid=$(delay_pid)
    [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q wan_delay.py
}

start_delay_line() {
    local n=$1 lifetime=$2 i j k
    write_delay_conf
    if [ "$DRY_RUN" = 1 ]; then
        sed 's/^/+   delay.conf: /' "$STATE/delay.conf"
    fi
    local cmd=(ip netns exec "$ROUTER" nice -n -10 "$PYTHON" "$HERE/wan_delay.py"
               --config "$STATE/delay.conf" --lifetime "$lifetime" --pid-file "$STATE/delay.pid")
    if [ "$DRY_RUN" = 1 ]; then
        echo "+ setsid ${cmd[*]} &"
    else
        # Its own session, every descriptor redirected: it outlives this script and
        # holds no pipe of whoever called it open.
        setsid "${cmd[@]}" </dev/null >"$STATE/delay.log" 2>&1 &
        for ((k = 0; k < 100; k++)); do
            grep -q "queues bound" "$STATE/delay.log" 2>/dev/null && break
            sleep 0.1
        done
        delay_alive || die "the delay line did not start: $(tail -n 3 "$STATE/delay.log" | tr '\n' ' ')"
    fi
    # Only now send packets to it (a queue nobody listens to drops everything).
    {
        echo "*filter"
        echo ":WL_DELAY - [0:0]"
        echo "-A FORWARD -j WL_DELAY"
        for ((i = 1; i <= n; i++)); do
            for ((j = 1; j <= n; j++)); do
                [ "$i" = "$j" ] || echo "-A WL_DELAY -i h$i -o h$j -j NFQUEUE --queue-num $((i * 256 + j))"
            done
        done
        echo "COMMIT"
    } >"$STATE/delay.rules"
    if [ "$DRY_RUN" = 1 ]; then
        sed 's/^/+   delay.rules: /' "$STATE/delay.rules"
    fi
    in_router iptables-restore --noflush "$STATE/delay.rules"
}

# set_cc NS ALGO (see the header: the allowed list is widened for a moment if needed)
set_cc() {
    local ns=$1 cc=$2 allowed
    [ "$DRY_RUN" = 1 ] && { x ip netns exec "$ns" sysctl -qw "net.ipv4.tcp_congestion_control=$cc"; return; }
    ip netns exec "$ns" sysctl -qw "net.ipv4.tcp_congestion_control=$cc" 2>/dev/null && return
    grep -qw "$cc" /proc/sys/net/ipv4/tcp_available_congestion_control \
        || die "congestion control '$cc' is not in this kernel (available: $(cat /proc/sys/net/ipv4/tcp_available_congestion_control))"
    allowed=$(cat /proc/sys/net/ipv4/tcp_allowed_congestion_control)
    log "adding '$cc' to net.ipv4.tcp_allowed_congestion_control ('$allowed') while $ns takes it"
    sysctl -qw "net.ipv4.tcp_allowed_congestion_control=$allowed $cc"
    ip netns exec "$ns" sysctl -qw "net.ipv4.tcp_congestion_control=$cc" || true
    sysctl -qw "net.ipv4.tcp_allowed_congestion_control=$allowed"
    [ "$(ip netns exec "$ns" sysctl -n net.ipv4.tcp_congestion_control)" = "$cc" ] \
        || die "could not set congestion control '$cc' in $ns"
}

add_namespace() {
    x ip netns add "$1"
    echo "$1" >>"$STATE/namespaces"
}

has_netem() {  # probed on the router's loopback, in a namespace of our own
    if tc -n "$ROUTER" qdisc add dev lo root netem delay 1ms 2>/dev/null; then
        tc -n "$ROUTER" qdisc del dev lo root
        return 0
    fi
    return 1
}

# ------------------------------------------------------------------ up -----
UP_COMPLETE=0
cmd_up() {
    local n=4 rtt=80 rate=1000 loss=0 qms=50 cc="" mtu=1500 offload=1 mode=auto lifetime=14400
    while [ $# -gt 0 ]; do
        case $1 in
            -n) n=${2:-}; shift 2 || usage_error "-n needs a value" ;;
            --rtt) rtt=${2:-}; shift 2 || usage_error "--rtt needs a value" ;;
            --rate) rate=${2:-}; shift 2 || usage_error "--rate needs a value" ;;
            --loss) loss=${2:-}; shift 2 || usage_error "--loss needs a value" ;;
            --queue-ms) qms=${2:-}; shift 2 || usage_error "--queue-ms needs a value" ;;
            --cc) cc=${2:-}; shift 2 || usage_error "--cc needs a value" ;;
            --mtu) mtu=${2:-}; shift 2 || usage_error "--mtu needs a value" ;;
            --delay-line) mode=${2:-}; shift 2 || usage_error "--delay-line needs a value" ;;
            --lifetime) lifetime=${2:-}; shift 2 || usage_error "--lifetime needs a value" ;;
            --no-offload) offload=0; shift ;;
            --dry-run) DRY_RUN=1; shift ;;
            *) usage_error "up: unknown option '$1'" ;;
        esac
    done
    is_count "$n" && [ "$n" -ge 2 ] && [ "$n" -le 200 ] || usage_error "-n must be a whole number of hosts, 2 to 200 (got '$n')"
    is_number "$rtt" || usage_error "--rtt must be a number of milliseconds (got '$rtt')"
    is_number "$rate" || usage_error "--rate must be a number of Mbit/s, 0 for unshaped (got '$rate')"
    is_number "$loss" && [ "$(calc "$loss < 100")" = 1 ] || usage_error "--loss must be a percentage below 100 (got '$loss')"
    is_number "$qms" && [ "$(calc "$qms > 0")" = 1 ] || usage_error "--queue-ms must be a positive number (got '$qms')"
    is_count "$mtu" && [ "$mtu" -ge 576 ] || usage_error "--mtu must be a whole number of bytes, at least 576 (got '$mtu')"
    is_count "$lifetime" && [ "$lifetime" -gt 0 ] || usage_error "--lifetime must be a whole number of seconds (got '$lifetime')"
    [[ $cc =~ ^[a-z0-9_]*$ ]] || usage_error "--cc must name a congestion control, e.g. cubic (got '$cc')"
    case $mode in auto | netem | userspace) ;; *) usage_error "--delay-line must be auto, netem or userspace (got '$mode')" ;; esac

    if [ "$DRY_RUN" = 1 ]; then
        STATE=$(mktemp -d "${TMPDIR:-/tmp}/wan_lab_dry.XXXXXX")
        trap 'rm -rf "$STATE"' EXIT
        [ "$mode" = auto ] && { echo "# --delay-line auto: netem where the kernel has it (shown), else userspace"; mode=netem; }
    else
        need_root
        need_tools ip tc awk
        lab_is_up && die "lab '$PREFIX' is already up (take it down with: $0 down)"
        local ns existing
        existing=$(ip netns list | awk '{print $1}')
        for ns in "$ROUTER" $(for ((i = 1; i <= n; i++)); do host_ns "$i"; done); do
            ! grep -qx "$ns" <<<"$existing" || die "namespace $ns exists and is not this lab's: choose another WAN_LAB_PREFIX"
        done
        mkdir -p "$STATE"
        : >"$STATE/namespaces"
        # Whatever way `up` ends before the lab is complete, take down what it built.
        trap 'if [ "$UP_COMPLETE" = 0 ]; then log "up failed; removing what it had created"; teardown; fi' EXIT
        trap 'exit 130' INT TERM
    fi
    echo "$qms" >"$STATE/queue_ms"
    : >"$STATE/hosts"
    for ((i = 1; i <= n; i++)); do
        awk -v i="$i" -v r="$rtt" -v rt="$rate" -v l="$loss" \
            'BEGIN {printf "%d %.4f %s %.6f 0\n", i, r / 4, rt, l / 2}' >>"$STATE/hosts"
    done

    add_namespace "$ROUTER"
    x ip -n "$ROUTER" link set lo up
    in_router sysctl -qw net.ipv4.ip_forward=1
    if [ "$mode" = auto ]; then
        if has_netem; then mode=netem
        elif [ "$(calc "$rtt == 0 && $loss == 0")" = 1 ]; then mode=none  # nothing to delay: no iptables needed
        else mode=userspace; fi
    fi
    if [ "$mode" = userspace ] && [ "$DRY_RUN" = 0 ]; then
        need_tools iptables iptables-restore "$PYTHON"
    fi
    echo "$mode" >"$STATE/delay_line"
    echo "hosts=$n rtt_ms=$rtt rate_mbit=$rate loss_pct=$loss queue_ms=$qms cc=${cc:-default} mtu=$mtu offload=$offload delay_line=$mode" >"$STATE/profile"

    for ((i = 1; i <= n; i++)); do
        local h; h=$(host_ns "$i")
        add_namespace "$h"
        x ip -n "$ROUTER" link add "h$i" mtu "$mtu" type veth peer name eth0 netns "$h" mtu "$mtu"
        x ip -n "$ROUTER" addr add "$SUBNET.$i.1/24" dev "h$i"
        x ip -n "$ROUTER" link set "h$i" up
        x ip -n "$h" link set lo up
        x ip -n "$h" addr add "$SUBNET.$i.2/24" dev eth0
        x ip -n "$h" link set eth0 up
        x ip -n "$h" route add "$SUBNET.0.0/16" via "$SUBNET.$i.1"
        if [ "$offload" = 0 ]; then  # one MSS per skb: loss and queues act per packet
            x ip -n "$h" link set dev eth0 gso_max_segs 1
        fi
        [ -z "$cc" ] || set_cc "$h" "$cc"
        # Every connection starts from scratch: a host that remembers a path's
        # ssthresh and RTT from an earlier connection (tcp_metrics) opens the
        # next one in congestion avoidance, and a benchmark that compares ring
        # orders one after the other would compare the hosts' memories.
        x ip netns exec "$h" sysctl -qw net.ipv4.tcp_no_metrics_save=1
        x ip -n "$ROUTER" link add "u$i" type ifb
        x ip -n "$ROUTER" link set "u$i" up
        x tc -n "$ROUTER" qdisc add dev "h$i" handle ffff: ingress
        x tc -n "$ROUTER" filter add dev "h$i" parent ffff: protocol all prio 1 u32 match u32 0 0 \
            action mirred egress redirect dev "u$i"
        shape_host "$i"
    done
    [ "$mode" != userspace ] || start_delay_line "$n" "$lifetime"
    UP_COMPLETE=1
    if [ "$DRY_RUN" = 1 ]; then log "dry run: nothing was changed"; return 0; fi
    log "up: $n hosts, RTT ${rtt} ms, ${rate} Mbit/s, loss ${loss} %, delay line $mode; host i is $SUBNET.i.2 in namespace $PREFIX-hi"
}

# ---------------------------------------------------------------- down -----
teardown() {
    lab_is_up || return 0
    local pid ns pids k
    if delay_alive; then
        pid=$(delay_pid)
        kill "$pid" 2>/dev/null || true
        for ((k = 0; k < 30; k++)); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    fi
    while read -r ns; do
        [ -n "$ns" ] && ip netns list | awk '{print $1}' | grep -qx "$ns" || continue
        # Processes still inside a lab namespace were started for the lab.
        pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
        if [ -n "${pids// /}" ]; then
            log "stopping processes in $ns: $pids"
            kill $pids 2>/dev/null || true
            sleep 0.3
            kill -9 $(ip netns pids "$ns" 2>/dev/null) 2>/dev/null || true
        fi
        ip netns del "$ns"  # takes its veths, IFBs, qdiscs, rules and routes with it
    done <"$STATE/namespaces"
    rm -rf "$STATE"
}

cmd_down() {
    need_root
    if ! lab_is_up; then
        log "lab '$PREFIX' is not up"
        return 0
    fi
    teardown
    log "down: lab '$PREFIX' removed"
}

cmd_run() {
    local up_args=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do up_args+=("$1"); shift; done
    [ "${1:-}" = -- ] && [ $# -ge 2 ] || usage_error "run: give the command after '--'"
    shift
    cmd_up "${up_args[@]}"
    trap 'teardown; log "down: lab '"'$PREFIX'"' removed"' EXIT
    local rc=0
    WAN_LAB_PREFIX=$PREFIX WAN_LAB_SUBNET=$SUBNET WAN_LAB_STATE=$STATE "$@" || rc=$?
    exit "$rc"
}

# -------------------------------------------------------------- status -----
cmd_status() {
    if ! lab_is_up; then echo "lab '$PREFIX': down"; return 0; fi
    local n i dev
    n=$(wc -l <"$STATE/hosts")
    echo "lab '$PREFIX': up ($(cat "$STATE/profile"))"
    if [ "$(delay_line)" = userspace ]; then
        if delay_alive; then echo "delay line: bench/wan_delay.py, pid $(delay_pid)"
        else echo "delay line: NOT RUNNING (the lab drops every forwarded packet)"; fi
    else
        echo "delay line: $(delay_line)"
    fi
    printf "%-5s %-14s %-15s %-13s %-10s %-12s %s\n" host namespace address "delay ms/dir" "rate Mbit" "loss %/dir" cut
    for ((i = 1; i <= n; i++)); do
        printf "%-5s %-14s %-15s %-13s %-10s %-12s %s\n" "$i" "$(host_ns "$i")" "$SUBNET.$i.2" \
            "$(host_field "$i" 2)" "$(host_field "$i" 3)" "$(host_field "$i" 4)" "$(host_field "$i" 5)"
    done
    echo "queues (u<i>: from host i, h<i>: towards host i):"
    for ((i = 1; i <= n; i++)); do
        for dev in "u$i" "h$i"; do
            tc -n "$ROUTER" -s qdisc show dev "$dev" | awk -v d="$dev" '
                /^qdisc (netem|bfifo)/ {leaf = 1}
                leaf && /Sent/ {sent = $2; pkts = $4; drops = $7; sub(",", "", drops)}
                leaf && /backlog/ {printf "  %-5s sent %s B in %s packets, dropped %s, backlog %s\n", d, sent, pkts, drops, $2; exit}'
        done
    done
    if [ "$(delay_line)" = userspace ] && delay_alive; then
        local before k
        before=$(grep -c "^wan_delay stats" "$STATE/delay.log" || true)
        kill -USR1 "$(delay_pid)"
        for ((k = 0; k < 20; k++)); do
            [ "$(grep -c "^wan_delay stats" "$STATE/delay.log" || true)" -gt "$before" ] && break
            sleep 0.1
        done
        echo "delay line (queue i*256+j: host i -> host j):"
        tac "$STATE/delay.log" | awk '/^wan_delay stats/ {exit} {print "  " $0}' | tac
    fi
}

cmd_check() {
    local ok=1
    for tool in ip tc awk; do command -v "$tool" >/dev/null || { echo "missing: $tool"; ok=0; }; done
    [ "$(id -u)" = 0 ] || { echo "not root: up/down/cut need root"; ok=0; }
    if grep -qs "^CONFIG_NET_SCH_NETEM=[ym]" "/boot/config-$(uname -r)" ||
       { [ -r /proc/config.gz ] && zcat /proc/config.gz 2>/dev/null | grep -q "^CONFIG_NET_SCH_NETEM=[ym]"; }; then
        echo "delay line: netem (kernel has sch_netem)"
    else
        echo "delay line: userspace unless the kernel can load sch_netem (needs iptables, iptables-restore, $PYTHON)"
        for tool in iptables iptables-restore "$PYTHON"; do
            command -v "$tool" >/dev/null || { echo "missing: $tool"; ok=0; }
        done
    fi
    [ "$ok" = 1 ] && echo "ok"
    [ "$ok" = 1 ]
}

# -------------------------------------------------------- live changes -----
cmd_set() {
    need_root; need_lab
    local i=${1:-}; need_host "$i"; shift
    while [ $# -gt 0 ]; do
        case $1 in
            --delay-ms) is_number "${2:-}" || usage_error "--delay-ms needs a number"; set_host_field "$i" 2 "$2"; shift 2 ;;
            --rate) is_number "${2:-}" || usage_error "--rate needs a number"; set_host_field "$i" 3 "$2"; shift 2 ;;
            --loss) is_number "${2:-}" || usage_error "--loss needs a number"; set_host_field "$i" 4 "$2"; shift 2 ;;
            *) usage_error "set: unknown option '$1'" ;;
        esac
    done
    if [ "$(delay_line)" = userspace ]; then
        write_delay_conf
        delay_alive && kill -HUP "$(delay_pid)"
    fi
    if [ "$(delay_line)" = none ] && [ "$(calc "$(host_field "$i" 2) > 0 || $(host_field "$i" 4) > 0")" = 1 ]; then
        die "this lab has no delay line (it came up with --rtt 0 --loss 0 on a kernel without netem): take it down and bring it up with a delay"
    fi
    shape_host "$i"
    log "host $i: delay $(host_field "$i" 2) ms each way, $(host_field "$i" 3) Mbit/s, loss $(host_field "$i" 4) %"
}

# Cuts: blackhole rules in the router's policy routing (silent: no ICMP, no RST).
cut_rules() {  # cut_rules add|del I
    ip -n "$ROUTER" rule "$1" iif "h$2" blackhole
    ip -n "$ROUTER" rule "$1" to "$SUBNET.$2.0/24" blackhole
}

cmd_cut() {
    need_root; need_lab
    local i=${1:-} mode=${2:-drop}; need_host "$i"
    [ "$(host_field "$i" 5)" = 0 ] || die "host $i is already cut ($(host_field "$i" 5))"
    case $mode in
        drop) cut_rules add "$i" ;;
        down) ip -n "$ROUTER" link set "h$i" down ;;
        *) usage_error "cut: mode must be drop or down (got '$mode')" ;;
    esac
    set_host_field "$i" 5 "$mode"
    log "host $i cut ($mode)"
}

cmd_restore() {
    need_root; need_lab
    local i=${1:-}; need_host "$i"
    case $(host_field "$i" 5) in
        drop) cut_rules del "$i" ;;
        down)
            ip -n "$ROUTER" link set "h$i" up
            ip -n "$ROUTER" addr replace "$SUBNET.$i.1/24" dev "h$i"
            ip -n "$(host_ns "$i")" route replace "$SUBNET.0.0/16" via "$SUBNET.$i.1" ;;
        *) log "host $i was not cut"; return 0 ;;
    esac
    set_host_field "$i" 5 0
    log "host $i restored"
}

cmd_pair() {
    need_root; need_lab
    local i=${1:-} j=${2:-} rtt=${3:-} rate=${4:-0}
    need_host "$i"; need_host "$j"
    [ "$i" != "$j" ] || usage_error "pair: two different hosts"
    [ "$rtt" = off ] || is_number "$rtt" || usage_error "pair: RTT_MS must be a number or off"
    is_number "$rate" || usage_error "pair: RATE_MBIT must be a number"
    [ "$(delay_line)" = userspace ] || die "pair needs the userspace delay line (this lab uses $(delay_line)): bring it up with --delay-line userspace"
    awk -v i="$i" -v j="$j" '!(($1 == i && $2 == j) || ($1 == j && $2 == i))' "$STATE/pairs" >"$STATE/pairs.new"
    [ "$rtt" = off ] || echo "$i $j $(calc "$rtt / 2") $rate" >>"$STATE/pairs.new"
    mv "$STATE/pairs.new" "$STATE/pairs"
    write_delay_conf
    delay_alive && kill -HUP "$(delay_pid)"
    log "hosts $i and $j: rtt ${rtt}$([ "$rtt" = off ] || echo " ms")$([ "$(calc "$rate > 0")" = 1 ] && echo ", ${rate} Mbit/s")"
}

pair_rules() {  # pair_rules add|del I J
    ip -n "$ROUTER" rule "$1" iif "h$2" to "$SUBNET.$3.0/24" blackhole
    ip -n "$ROUTER" rule "$1" iif "h$3" to "$SUBNET.$2.0/24" blackhole
}

cmd_cutpair() {
    need_root; need_lab
    need_host "${1:-}"; need_host "${2:-}"
    [ "$1" != "$2" ] || usage_error "cutpair: two different hosts"
    pair_rules add "$1" "$2"
    log "hosts $1 and $2 cut from each other"
}

cmd_restorepair() {
    need_root; need_lab
    need_host "${1:-}"; need_host "${2:-}"
    pair_rules del "$1" "$2" 2>/dev/null || log "hosts $1 and $2 were not cut from each other"
    log "hosts $1 and $2 restored"
}

# ------------------------------------------------------------- probing -----
cmd_rtt() {
    need_root; need_lab
    local i=${1:-} j=${2:-} count=${3:-5}
    need_host "$i"; need_host "$j"
    is_count "$count" && [ "$count" -ge 1 ] || usage_error "rtt: COUNT must be a positive whole number"
    # A connection attempt to a closed port is refused after one round trip.
    ip netns exec "$(host_ns "$i")" "$PYTHON" - "$SUBNET.$j.2" "$count" <<'EOF'
import socket, statistics, sys, time
addr, count = sys.argv[1], int(sys.argv[2])
samples = []
for _ in range(count):
    s = socket.socket()
    s.settimeout(10)
    t0 = time.perf_counter()
    try:
        s.connect((addr, 9))
    except ConnectionRefusedError:
        samples.append((time.perf_counter() - t0) * 1000)
    except OSError as exc:
        sys.exit(f"no answer from {addr}: {exc}")
    finally:
        s.close()
print(f"rtt to {addr}: median {statistics.median(samples):.1f} ms, min {min(samples):.1f} ms ({count} tries)")
EOF
}

# ---------------------------------------------------------------- main -----
main() {
    local cmd=${1:-}
    [ $# -gt 0 ] && shift
    case $cmd in
        up) cmd_up "$@" ;;
        down) cmd_down ;;
        run) cmd_run "$@" ;;
        status) cmd_status ;;
        check) cmd_check ;;
        ip) need_lab; need_host "${1:-}"; echo "$SUBNET.$1.2" ;;
        exec) need_root; need_lab; need_host "${1:-}"; local i=$1; shift
              [ $# -gt 0 ] || usage_error "exec: give a command"
              exec ip netns exec "$(host_ns "$i")" "$@" ;;
        rtt) cmd_rtt "$@" ;;
        set) cmd_set "$@" ;;
        cut) cmd_cut "$@" ;;
        restore) cmd_restore "$@" ;;
        pair) cmd_pair "$@" ;;
        cutpair) cmd_cutpair "$@" ;;
        restorepair) cmd_restorepair "$@" ;;
        help | -h | --help) usage ;;
        "") usage >&2; exit 2 ;;
        *) usage_error "unknown command '$cmd'" ;;
    esac
}

main "$@"
