"""optimize_topology()'s link probes over a slow path (#19): in a 3-host WAN
lab (bench/wan_lab.sh, userspace delay line) whose hosts 1 and 2 are joined
by a path of their own, RTT 60 ms and 8 Mbit/s (`pair`), while every other
pair has RTT 10 ms and 200 Mbit/s access links, the master's matrix must show
that path as it is and must not take longer than its probes:

- the pair's bandwidth within [4, 10] Mbit/s each way, every other link at
  least 2.5 times faster; the pair's RTT in [59, 90] ms, every other one in
  [9, 40] ms (a ping timed behind the probe's own bulk bytes measures the
  bottleneck queue, not the path);
- optimize_topology() returns within 2 rounds x (probe 0.5 s + 1.5 s) + 1 s: a
  prober that waits for its send buffers to drain before it reads the answer
  spends seconds per round on an 8 Mbit/s path (megabytes queued per stream).

The peers run tests/fault/peer_loop.py with the optimize flag present from
the start; the master (own host) writes its status to a file."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

from test_link_cut import HERE, Lab, group0
from test_wan_lab import _can_build_a_lab, delay_line_ready, lab

PEERS = 3
PORT = 48149
PROBE_SECONDS = 0.5
SLOW_PAIR = (1, 2)  # hosts
SLOW_RTT_MS, SLOW_MBIT = 60, 8
RTT_MS, ACCESS_MBIT = 10, 200


@pytest.fixture(scope="module")
def probe_lab():
    why = _can_build_a_lab()
    if why:
        pytest.skip(why)  # not root or no iproute2: no network namespaces at all
    if not delay_line_ready():
        pytest.skip("no delay line on this machine (neither netem nor iptables + NFQUEUE)")
    the_lab = Lab(tempfile.mkdtemp(prefix="pccl-probe-"), subnet="10.82", prefix="pl", peers=PEERS)
    the_lab.up("--rtt", str(RTT_MS), "--rate", str(ACCESS_MBIT), "--delay-line", "userspace")
    try:
        yield the_lab
    finally:
        the_lab.down()


def test_probes_measure_a_slow_path_as_it_is_without_waiting_for_its_queue(probe_lab):
    lab_ = probe_lab
    d = lab_.dir
    a, b = SLOW_PAIR
    assert lab("pair", str(a), str(b), str(SLOW_RTT_MS), str(SLOW_MBIT), **lab_.env).returncode == 0
    master_host = PEERS + 1
    lab_.start(master_host, sys.executable, str(HERE / "fault" / "status_master.py"), "--port",
               str(PORT), "--status", os.path.join(d, "status.json"), "--probe-seconds",
               str(PROBE_SECONDS), log=os.path.join(d, "master.log"))
    lab_.wait("the master listening", lambda: "groups" in lab_.status(), 60)
    flag = os.path.join(d, "optimize")
    Path(flag).touch()  # every peer optimizes once all 3 train
    for i in range(PEERS):
        lab_.start(i + 1, sys.executable, str(HERE / "fault" / "peer_loop.py"), "--master",
                   f"{lab_.ip(master_host)}:{PORT}", "--index", str(i), "--out",
                   os.path.join(d, f"peer{i}.jsonl"), "--timeout", "20", "--seconds", "120",
                   "--elements", "1024", "--min-peers", str(PEERS), "--optimize-when", flag,
                   log=os.path.join(d, f"peer{i}.log"))
    optimized = lab_.wait("every peer optimized", lambda: [
        next((r for r in lab_.records(i) if "optimized" in r), None) for i in range(PEERS)]
        if all(any("optimized" in r for r in lab_.records(i)) for i in range(PEERS)) else None, 180)
    took = max(r["took"] for r in optimized)
    status = lab_.status_after(max(r["t"] for r in optimized))
    host_of = {p["id"]: int(p["address"].split(":")[0].split(".")[2]) for p in status["peers"]}
    links = {(host_of[x["from"]], host_of[x["to"]]): x for x in group0(status)["links"]}
    figures = {k: (round(x["bytes_per_s"] * 8e-6, 1), round(x["rtt_ms"], 1)) for k, x in links.items()}
    print(f"optimize_topology() took {took:.2f} s; links (Mbit/s, RTT ms): {figures}")
    assert len(links) == PEERS * (PEERS - 1) and all(x["ok"] for x in links.values()), links
    slow = [figures[(a, b)], figures[(b, a)]]
    for mbit, rtt in slow:
        assert 4 <= mbit <= 10 and 59 <= rtt <= 90, figures
    for pair, (mbit, rtt) in figures.items():
        if set(pair) != {a, b}:
            assert mbit >= 2.5 * max(m for m, _ in slow) and 9 <= rtt <= 40, (pair, figures)
    assert took <= (PEERS - 1) * (PROBE_SECONDS + 1.5) + 1.0, took  # + the plan and the vote
    assert not any("fatal" in r for i in range(PEERS) for r in lab_.records(i))
