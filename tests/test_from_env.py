"""Communicator.from_env(): the master's address, the secret and the peer
group from the environment (what `jax-pccl launch` sets), keywords first."""
from __future__ import annotations

import pytest

import jax_pccl as pccl

VARS = ("JAX_PCCL_MASTER", "JAX_PCCL_SECRET_FILE", "JAX_PCCL_SECRET", "JAX_PCCL_PEER_GROUP")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in VARS:
        monkeypatch.delenv(var, raising=False)


def test_a_missing_master_address_says_what_to_set():
    with pytest.raises(pccl.PcclError, match="JAX_PCCL_MASTER is not set: set it to the master's host:port"):
        pccl.Communicator.from_env()


def test_a_malformed_master_address_is_named(monkeypatch):
    monkeypatch.setenv("JAX_PCCL_MASTER", "nohost")
    with pytest.raises(pccl.PcclError, match="JAX_PCCL_MASTER='nohost'"):
        pccl.Communicator.from_env()


def test_address_secret_file_and_group_from_the_environment(monkeypatch, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"s3cret\n")
    with pccl.Master(host="127.0.0.1", port=0, secret="s3cret") as master:
        monkeypatch.setenv("JAX_PCCL_MASTER", master.address)
        monkeypatch.setenv("JAX_PCCL_SECRET_FILE", str(secret))
        monkeypatch.setenv("JAX_PCCL_PEER_GROUP", "3")
        with pccl.Communicator.from_env(timeout=5) as comm:
            assert (comm.address, comm.peer_group, comm.timeout) == (master.address, 3, 5.0)
            comm.connect()  # the secret, less its newline, is the master's
            assert comm.group_world_size == 1
        with pccl.Communicator.from_env(peer_group=1, secret="wrong", timeout=5) as comm:
            assert comm.peer_group == 1  # keywords win
            with pytest.raises(pccl.PcclError, match="authentication"):
                comm.connect(timeout=5)


def test_the_secret_itself_from_jax_pccl_secret(monkeypatch):
    with pccl.Master(host="127.0.0.1", port=0, secret="s3cret") as master:
        monkeypatch.setenv("JAX_PCCL_MASTER", master.address)
        monkeypatch.setenv("JAX_PCCL_SECRET", "s3cret")
        with pccl.Communicator.from_env(timeout=5) as comm:
            comm.connect()


@pytest.mark.parametrize("content, message", [(None, "missing: cannot read the secret"),
                                              (b"", "is empty"), (b"\n", "is empty")])
def test_an_unusable_secret_file_is_named(monkeypatch, tmp_path, content, message):
    path = tmp_path / "missing"
    if content is not None:
        path.write_bytes(content)
    monkeypatch.setenv("JAX_PCCL_MASTER", "127.0.0.1:48148")
    monkeypatch.setenv("JAX_PCCL_SECRET_FILE", str(path))
    with pytest.raises(pccl.PcclError, match=f"JAX_PCCL_SECRET_FILE=.*{message}"):
        pccl.Communicator.from_env()


@pytest.mark.parametrize("group", ["first", "-1", str(2**32)])
def test_a_bad_peer_group_is_named(monkeypatch, group):
    monkeypatch.setenv("JAX_PCCL_MASTER", "127.0.0.1:48148")
    monkeypatch.setenv("JAX_PCCL_PEER_GROUP", group)
    with pytest.raises(pccl.PcclError, match=f"JAX_PCCL_PEER_GROUP='{group}'"):
        pccl.Communicator.from_env()
