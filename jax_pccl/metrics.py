"""The master's status as Prometheus metrics (text exposition format 0.0.4),
served by ``jax-pccl master --http-port`` at ``/metrics``.

Everything comes from one ``Master.status()`` snapshot: the master's own
figures, each group's epoch, size and shared-state revision, each peer's
counters (reported in its heartbeats) and each measured link. Peer counters
are the peer's since it connected: they start again at 0 when a peer
reconnects (a new ``peer`` label), as Prometheus counters may.
"""

from __future__ import annotations


def _label_value(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Exposition:
    def __init__(self):
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples) -> None:
        """One metric family; `samples` yields (labels dict, value). A counter's
        name gets the conventional `_total` suffix (in this format the suffix
        is part of the name, on its HELP and TYPE lines too)."""
        sample_name = f"{name}_total" if kind == "counter" else name
        self.lines.append(f"# HELP {sample_name} {help_text}")
        self.lines.append(f"# TYPE {sample_name} {kind}")
        for labels, value in samples:
            text = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items())
            self.lines.append(f"{sample_name}{{{text}}} {float(value)!r}" if text
                              else f"{sample_name} {float(value)!r}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def prometheus_text(status: dict) -> str:
    """The exposition text of one ``Master.status()`` snapshot."""
    out = _Exposition()
    one = lambda v: [({}, v)]  # noqa: E731
    out.family("jax_pccl_master_uptime_seconds", "gauge", "Seconds since the master started.",
               one(status["uptime_s"]))
    out.family("jax_pccl_world_size", "gauge", "Accepted peers in the run, all groups.",
               one(status["world_size"]))
    out.family("jax_pccl_open_connections", "gauge", "Connections the master holds open.",
               one(status["open_connections"]))
    out.family("jax_pccl_dropped_connections", "counter", "Connections the master dropped.",
               one(status["dropped_connections"]))
    out.family("jax_pccl_auth_refusals", "counter", "Connections the handshake refused.",
               one(status["auth_refusals"]))
    groups = status["groups"]
    for key, kind, help_text in (
            ("world_size", "gauge", "Peers in the group's ring."),
            ("pending", "gauge", "Peers waiting to be admitted."),
            ("epoch", "gauge", "The group's ring epoch (it changes with every membership change).")):
        out.family(f"jax_pccl_group_{key}", kind, help_text,
                   [({"group": g["group"]}, g[key]) for g in groups])
    out.family("jax_pccl_group_shared_state_revision", "gauge",
               "The group's shared-state revision (absent before its first sync).",
               [({"group": g["group"]}, g["shared_state_revision"]) for g in groups
                if g["shared_state_revision"] is not None])
    peers = status["peers"]

    def per_peer(key):
        return [({"peer": p["id"], "group": p["group"]}, p[key]) for p in peers]

    for key, help_text in (("collectives_done", "Collectives the peer completed."),
                           ("collectives_failed", "Collectives that failed on the peer."),
                           ("bytes_sent", "Bytes the peer sent to other peers."),
                           ("bytes_received", "Bytes the peer received from other peers."),
                           ("shared_state_syncs", "Shared-state syncs the peer took part in.")):
        out.family(f"jax_pccl_peer_{key.removesuffix('_done')}", "counter", help_text, per_peer(key))
    out.family("jax_pccl_peer_bytes_per_second", "gauge",
               "Bytes sent + received per second between the peer's last two heartbeats.",
               per_peer("bytes_per_s"))
    out.family("jax_pccl_peer_heartbeat_age_seconds", "gauge",
               "Seconds since the master last heard from the peer.",
               [({"peer": p["id"], "group": p["group"]}, p["heard_s_ago"]) for p in peers
                if p["heard_s_ago"] >= 0])
    out.family("jax_pccl_peer_accepted", "gauge", "1 if the peer is in its group's ring, 0 if pending.",
               [({"peer": p["id"], "group": p["group"]}, p["state"] == "accepted") for p in peers])
    links = [(g["group"], x) for g in groups for x in g.get("links", []) if x["ok"]]
    out.family("jax_pccl_link_bytes_per_second", "gauge",
               "Measured bandwidth of a directed link (optimize_topology()).",
               [({"group": gid, "from": x["from"], "to": x["to"]}, x["bytes_per_s"]) for gid, x in links])
    out.family("jax_pccl_link_rtt_seconds", "gauge", "Measured round trip of a directed link.",
               [({"group": gid, "from": x["from"], "to": x["to"]}, x["rtt_ms"] / 1e3) for gid, x in links])
    return out.text()
