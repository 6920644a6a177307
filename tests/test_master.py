"""The in-process master used by the multi-process tests."""
import json


def test_master_listens_on_a_free_port_and_reports_status(master):
    host, port = master.address.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) == master.port > 0, (master.address, master.port)
    status = master.status()
    json.dumps(status)  # must be JSON-serialisable
    assert isinstance(status, dict), status


def test_master_close_is_idempotent(pccl):
    m = pccl.Master(host="127.0.0.1", port=0)
    m.close()
    m.close()
