"""bench/wan_lab.sh, the emulated WAN that bench/wan.py measures over.

Without privileges: its usage, its one-line refusals of bad arguments and of a
caller who is not root, and what `up --dry-run` would build (delays, rates and
losses per access link, for netem and for the userspace delay line). Where
this process may create network namespaces: a real 2-host lab has the RTT it
was given, a cut host is silently unreachable until restored, and `down`
leaves nothing behind.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

import provision

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAB = os.path.join(REPO_ROOT, "bench", "wan_lab.sh")


def lab(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", LAB, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env}, cwd=tempfile.gettempdir())


def commands(out: str) -> list[str]:
    """The commands a dry run printed, without their '+ ' prefix."""
    return [line[2:] for line in out.splitlines() if line.startswith("+ ")]


def test_help_prints_the_usage():
    r = lab("help")
    assert r.returncode == 0, r.stderr
    for text in ("up [-n HOSTS] [--rtt MS] [--rate MBIT] [--loss PCT]", "down", "cut I [drop|down]",
                 "pair I J RTT_MS|off",
                 "--dry-run", "WAN_LAB_PREFIX"):
        assert text in r.stdout, text


def test_no_command_prints_the_usage_and_fails():
    r = lab()
    assert r.returncode == 2
    assert "Usage: bench/wan_lab.sh COMMAND" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["up", "-n", "1"], "-n must be a whole number of hosts, 2 to 200 (got '1')"),
    (["up", "--rtt", "fifty"], "--rtt must be a number of milliseconds (got 'fifty')"),
    (["up", "--rtt"], "--rtt needs a value"),
    (["up", "--loss", "100"], "--loss must be a percentage below 100 (got '100')"),
    (["up", "--delay-line", "tc"], "--delay-line must be auto, netem or userspace (got 'tc')"),
    (["up", "--frobnicate"], "up: unknown option '--frobnicate'"),
    (["run", "-n", "2"], "run: give the command after '--'"),
    (["warp"], "unknown command 'warp'"),
])
def test_bad_arguments_are_refused_in_one_line(args, message):
    r = lab(*args)
    assert r.returncode == 2, r
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("wan_lab: "), r.stderr
    assert message in r.stderr, r.stderr
    assert r.stdout == ""


def test_without_root_up_refuses_in_one_line():
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root, and no setpriv to drop root with")
        cmd = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "bash", LAB]
    else:
        cmd = ["bash", LAB]
    r = subprocess.run([*cmd, "up", "-n", "2"], capture_output=True, text=True, timeout=60,
                       cwd=tempfile.gettempdir())
    assert r.returncode == 1
    assert r.stderr == ("wan_lab: needs root (it creates network namespaces and qdiscs): "
                        "run it with sudo\n")


def test_dry_run_with_netem_shapes_both_directions_of_every_access_link():
    prefix = f"dry{os.getpid()}"
    r = lab("up", "--dry-run", "-n", "2", "--rtt", "50", "--rate", "100", "--loss", "0.2",
            "--delay-line", "netem", WAN_LAB_PREFIX=prefix, WAN_LAB_SUBNET="10.66")
    assert r.returncode == 0, r.stderr
    cmds = commands(r.stdout)
    assert [c for c in cmds if c.startswith("ip netns add")] == [
        f"ip netns add {prefix}-r", f"ip netns add {prefix}-h1", f"ip netns add {prefix}-h2"]
    assert f"ip -n {prefix}-h2 addr add 10.66.2.2/24 dev eth0" in cmds
    # RTT 50 = 4 access-link crossings of 12.5 ms; 0.2 % loss = 0.1 % on each of 2 hops
    for dev in ("h1", "u1", "h2", "u2"):
        netem = [c for c in cmds if f"dev {dev} parent 1:1 handle 10: netem" in c]
        assert len(netem) == 1 and "delay 12.5000ms loss 0.100000%" in netem[0], cmds
        htb = [c for c in cmds if f"class replace dev {dev} " in c]
        assert len(htb) == 1 and "rate 100mbit" in htb[0], cmds
    assert "dry run: nothing was changed" in r.stderr
    assert not os.path.exists(f"/tmp/wan_lab.{prefix}")
    if shutil.which("ip"):
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert prefix not in listed


def test_dry_run_with_the_userspace_delay_line_delays_each_path_by_both_links():
    r = lab("up", "--dry-run", "-n", "3", "--rtt", "40", "--loss", "1", "--queue-ms", "30",
            "--delay-line", "userspace")
    assert r.returncode == 0, r.stderr
    conf = {int(q): (float(d), float(p), float(rate), float(qms)) for q, d, p, rate, qms in
            re.findall(r"^\+   delay\.conf: (\d+) (\S+) (\S+) (\S+) (\S+)$", r.stdout, re.M)}
    paths = {i * 256 + j for i in (1, 2, 3) for j in (1, 2, 3) if i != j}
    assert set(conf) == paths, conf
    for delay, loss, rate, qms in conf.values():  # one way: 10 ms + 10 ms; loss: 0.5 % on each of 2 hops
        assert delay == 20.0
        assert loss == pytest.approx(1 - 0.995 ** 2, abs=1e-6)
        assert rate == 0 and qms == 30  # no path of its own: the access links' HTB shapes it
    rules = re.findall(r"^\+   delay\.rules: -A WL_DELAY -i h(\d) -o h(\d) -j NFQUEUE --queue-num (\d+)$",
                       r.stdout, re.M)
    assert {int(i) * 256 + int(j) for i, j, q in rules} == paths
    assert all(int(i) * 256 + int(j) == int(q) for i, j, q in rules)
    assert any("wan_delay.py --config" in c for c in commands(r.stdout))


def test_wan_py_runs_the_lab_script_of_this_repository():
    spec = importlib.util.spec_from_file_location("wan", os.path.join(REPO_ROOT, "bench", "wan.py"))
    wan = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wan)
    assert os.path.samefile(wan.WAN_LAB, LAB)
    r = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bench", "wan.py"), "--help"],
                       capture_output=True, text=True, timeout=60, cwd=tempfile.gettempdir())
    assert r.returncode == 0 and "--rtt" in r.stdout, r.stderr


def delay_line_ready() -> bool:
    """Whether the lab has a delay line here (netem, else iptables + NFQUEUE:
    CI installs iptables, see provision.py)."""
    provision.program("iptables-restore", "iptables")
    return lab("check").returncode == 0


def _can_build_a_lab() -> str | None:
    """Why a real lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None:
        return "no ip (iproute2)"
    probe = f"wlprobe{os.getpid()}"
    if subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode != 0:
        return "cannot create network namespaces"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


CONNECT = """
import socket, sys
s = socket.socket(); s.settimeout(float(sys.argv[2]))
try:
    s.connect((sys.argv[1], 9))
except ConnectionRefusedError:
    print("answered")
except socket.timeout:
    print("silent")
"""


def test_a_real_lab_has_its_rtt_cuts_silently_and_leaves_nothing_behind():
    """With a delay line (netem in the kernel, or iptables for the userspace
    one) the lab runs at 40 ms RTT and the RTT is checked; without one (e.g. a
    CI machine without netem or iptables) it comes up with no delay, says so,
    and everything else is checked the same."""
    why = _can_build_a_lab()
    if why:
        pytest.skip(why)  # not root or no iproute2: no network namespaces at all
    rtt = 40 if delay_line_ready() else 0
    prefix, subnet = f"t{os.getpid() % 100000}", "10.79"
    env = {"WAN_LAB_PREFIX": prefix, "WAN_LAB_SUBNET": subnet}
    up = lab("up", "-n", "2", "--rtt", str(rtt), "--rate", "100", **env)
    assert up.returncode == 0, up.stderr
    try:
        r = lab("rtt", "1", "2", "5", **env)
        assert r.returncode == 0, r.stderr
        median = float(re.search(r"median ([\d.]+) ms", r.stdout).group(1))
        if rtt:
            assert 39.0 <= median < 80.0, r.stdout  # 40 ms, plus whatever a busy machine adds
        else:
            assert median < 20.0, r.stdout
            status = lab("status", **env)
            assert "delay line: none" in status.stdout, status.stdout

        def connect_from_1(timeout: float) -> str:
            r = lab("exec", "1", sys.executable, "-c", CONNECT, f"{subnet}.2.2", str(timeout), **env)
            assert r.returncode == 0, r.stderr
            return r.stdout.strip()

        assert lab("cut", "2", **env).returncode == 0
        assert connect_from_1(1.5) == "silent"  # no RST, no ICMP: a timeout
        assert lab("restore", "2", **env).returncode == 0
        assert connect_from_1(10) == "answered"
    finally:
        down = lab("down", **env)
    assert down.returncode == 0, down.stderr
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not re.search(rf"^{prefix}-", listed, re.M), listed
    assert not os.path.exists(f"/tmp/wan_lab.{prefix}")


# A bulk TCP transfer inside the lab: the receiver prints Mbit/s from its first
# to its last byte (the sender's buffer filling up front does not count).
_RECEIVER = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1); s.settimeout(30)
c, _ = s.accept(); c.settimeout(30)
n, first, last = 0, None, None
while True:
    b = c.recv(1 << 16)
    if not b:
        break
    now = time.monotonic(); first = first or now; n += len(b); last = now
print(n * 8 / (last - first) / 1e6)
"""
_SENDER = """
import socket, sys, time
end = time.monotonic() + 20
while True:
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5); break
    except OSError:
        if time.monotonic() > end: raise
        time.sleep(0.1)
block, stop = bytes(1 << 16), time.monotonic() + float(sys.argv[3])
while time.monotonic() < stop:
    s.sendall(block)
s.close()
"""


def throughput_mbit(env: dict, src: int, dst: int, dst_ip: str, seconds: float, port: int) -> float:
    receiver = subprocess.Popen(["bash", LAB, "exec", str(dst), sys.executable, "-c", _RECEIVER, str(port)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **env})
    sender = lab("exec", str(src), sys.executable, "-c", _SENDER, dst_ip, str(port), str(seconds), **env)
    out, err = receiver.communicate(timeout=60)
    assert sender.returncode == 0 and receiver.returncode == 0, (sender.stderr, err)
    return float(out)


def test_a_real_lab_overrides_the_rtt_of_one_pair():
    """`pair I J RTT [RATE]` (the userspace delay line) sets the RTT of that
    pair alone, both ways, and with RATE a bottleneck of its own; `off`
    restores the access links'. Minimums of the RTT samples: a busy machine
    adds delay, never removes it; a rate it can only lower, so the limited
    path has an upper bound and the other a lower one."""
    why = _can_build_a_lab()
    if why:
        pytest.skip(why)  # not root or no iproute2: no network namespaces at all
    if not delay_line_ready():
        pytest.skip("no delay line on this machine (neither netem nor iptables + NFQUEUE)")
    prefix, subnet = f"p{os.getpid() % 100000}", "10.86"
    env = {"WAN_LAB_PREFIX": prefix, "WAN_LAB_SUBNET": subnet}
    up = lab("up", "-n", "3", "--rtt", "20", "--rate", "100", "--delay-line", "userspace", **env)
    assert up.returncode == 0, up.stderr

    def rtt_min(i: int, j: int) -> float:
        r = lab("rtt", str(i), str(j), "5", **env)
        assert r.returncode == 0, r.stderr
        return float(re.search(r"min ([\d.]+) ms", r.stdout).group(1))
    try:
        assert lab("pair", "1", "2", "100", **env).returncode == 0
        assert rtt_min(1, 2) >= 99.0 and rtt_min(2, 1) >= 99.0
        assert 19.0 <= rtt_min(1, 3) < 90.0
        assert lab("pair", "2", "1", "off", **env).returncode == 0
        assert 19.0 <= rtt_min(1, 2) < 90.0
        bad = lab("pair", "1", "1", "50", **env)
        assert bad.returncode == 2 and "two different hosts" in bad.stderr
        bad = lab("pair", "1", "2", "50", "fast", **env)
        assert bad.returncode == 2 and "RATE_MBIT must be a number" in bad.stderr
        # A path of 20 Mbit/s between hosts 1 and 2; host 3's access links carry 100.
        assert lab("pair", "1", "2", "20", "20", **env).returncode == 0
        limited = throughput_mbit(env, 1, 2, f"{subnet}.2.2", 3.0, 5301)
        assert 10.0 <= limited <= 22.0, limited
        free = throughput_mbit(env, 1, 3, f"{subnet}.3.2", 2.0, 5302)
        assert free >= 2.5 * limited, (free, limited)
    finally:
        down = lab("down", **env)
    assert down.returncode == 0, down.stderr


def test_the_delay_lines_path_bottleneck_serializes_then_delays_and_tail_drops():
    """wan_delay.Queue.admit(): a path of its own rate sends packets one
    after the other at that rate, each then travels the path's delay; what
    would wait longer than the buffer (QUEUE_MS, at least 256 KiB) is dropped."""
    spec = importlib.util.spec_from_file_location("wan_delay", os.path.join(REPO_ROOT, "bench", "wan_delay.py"))
    wan_delay = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wan_delay)
    q = wan_delay.Queue(258, delay_s=0.010, loss=0.0, bytes_per_s=1e6, queue_s=0.4995)
    assert q.admit(100.0, 1000) == pytest.approx(100.011)  # 1 ms on the wire, then 10 ms
    assert q.admit(100.0, 1000) == pytest.approx(100.012)  # behind the first
    assert q.admit(100.5, 1000) == pytest.approx(100.511)  # the path was idle again
    # ~0.5 s of buffer at 1 MB/s: the 500th packet of 1000 bytes would wait 0.5 s.
    admitted = [q.admit(200.0, 1000) for _ in range(502)]
    assert all(t is not None for t in admitted[:500]) and admitted[500:] == [None, None]
    assert q.queue_drops == 2
    # A short QUEUE_MS still holds 256 KiB (GSO super-packets of 64 KiB).
    small = wan_delay.Queue(259, delay_s=0.0, loss=0.0, bytes_per_s=1e6, queue_s=0.001)
    burst = [small.admit(0.0, 60000) for _ in range(6)]  # the 6th would wait 0.3 s > 0.262 s
    assert [t is not None for t in burst] == [True] * 5 + [False]
    # No rate of its own: only the delay, in FIFO order.
    free = wan_delay.Queue(260, delay_s=0.020, loss=0.0)
    assert free.admit(1.0, 65536) == pytest.approx(1.020) and free.admit(1.0, 1) == pytest.approx(1.020)
