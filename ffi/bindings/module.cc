// nanobind module jax_pccl._pccl: a thin layer over the engine. Blocking
// calls release the GIL; engine errors become the Python exception classes of
// jax_pccl.errors; the XLA FFI handler is exported as a capsule.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <memory>
#include <string>

#ifndef PCCL_SANITIZER
#define PCCL_SANITIZER ""
#endif

#include "collectives/quantization.h"
#include "common/content_hash.h"
#include "common/dtype.h"
#include "common/errors.h"
#include "master/master.h"
#include "peer/master_status_client.h"
#include "peer/communicator.h"
#include "protocol/shared_state_messages.h"
#include "xla/all_reduce_async_handler.h"
#include "xla/collective_handler.h"
#include "xla/comm_registry.h"
#include "xla/handler_faults.h"
#if defined(PCCL_WITH_CUDA)
#include "xla/cuda/all_reduce_async_cuda_handler.h"
#include "xla/cuda/collective_cuda_handler.h"
#endif

namespace nb = nanobind;
using namespace nb::literals;

namespace pccl {
namespace {

void raise_python_error(const PcclError& e) {
  nb::object errors = nb::module_::import_("jax_pccl.errors");
  nb::object cls = errors.attr(error_kind_name(e.kind()));
  PyErr_SetString(cls.ptr(), e.what());
}

// The `secret` argument: bytes or str (UTF-8), None for no authentication.
// An empty secret is refused: it would silently mean "no authentication".
std::string secret_from_python(nb::handle secret) {
  if (secret.is_none()) return std::string();
  std::string out;
  if (nb::isinstance<nb::bytes>(secret)) {
    nb::bytes b = nb::borrow<nb::bytes>(secret);
    out.assign(b.c_str(), b.size());
  } else if (nb::isinstance<nb::str>(secret)) {
    Py_ssize_t n = 0;
    const char* p = PyUnicode_AsUTF8AndSize(secret.ptr(), &n);
    if (p == nullptr) throw nb::python_error();
    out.assign(p, static_cast<size_t>(n));
  } else {
    throw nb::type_error("secret must be bytes, str or None");
  }
  if (out.empty()) throw nb::value_error("secret must not be empty (use None for no authentication)");
  return out;
}

// Owns one engine communicator and its registry handle.
class PyCommunicator {
 public:
  PyCommunicator(const std::string& host, uint16_t port, uint32_t group, double timeout,
                 const std::string& advertise_host, std::string secret = std::string(),
                 int connections = kDefaultRingConnections, int concurrency = 1) {
    CommunicatorConfig cfg;
    cfg.master_host = host;
    cfg.master_port = port;
    cfg.group = group;
    cfg.timeout_s = timeout;
    cfg.advertise_host = advertise_host;
    cfg.secret = std::move(secret);
    cfg.connections = connections;
    cfg.concurrency = concurrency;
    comm_ = std::make_shared<Communicator>(std::move(cfg));
    completions_ = CompletionExecutor::create();
    handle_ = register_communicator(comm_, completions_);
  }
  ~PyCommunicator() {
    // close() may wait for an XLA program's rest, running on a completion
    // thread, that needs the GIL (a host callback): never hold it there.
    if (PyGILState_Check()) {
      nb::gil_scoped_release unlocked;
      close();
    } else {
      close();
    }
  }

  // In this order: new calls find no communicator; the engine ends or
  // cancels every collective and joins its threads, which posts each pending
  // wait's completion; the completion executor runs them (XLA's programs go
  // on and fail at their next collective) and joins its threads.
  void close() {
    if (handle_ != 0) unregister_communicator(handle_);
    handle_ = 0;
    comm_->close();
    if (completions_) completions_->close();
  }

  std::shared_ptr<Communicator> comm_;
  std::shared_ptr<CompletionExecutor> completions_;
  int64_t handle_ = 0;
};

// A leaf's bytes as Python hands them over: contiguous, read-only is fine.
using ByteView = nb::ndarray<const uint8_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

// Hands a received buffer to numpy without a copy; numpy frees it.
nb::object to_numpy(HostBuffer bytes) {
  size_t size = bytes.size;
  uint8_t* data = bytes.data.release();
  nb::capsule owner(data, [](void* p) noexcept { std::free(p); });
  return nb::cast(nb::ndarray<nb::numpy, uint8_t, nb::ndim<1>>(data, {size}, owner));
}

nb::dict sync_shared_state(PyCommunicator& c, const std::vector<ByteView>& leaves,
                           const std::vector<uint8_t>& dtypes,
                           const std::vector<std::vector<int64_t>>& dims, uint64_t revision,
                           uint8_t strategy, uint64_t structure) {
  if (dtypes.size() != leaves.size() || dims.size() != leaves.size()) {
    throw nb::value_error("leaves, dtypes and dims must have the same length");
  }
  if (strategy > static_cast<uint8_t>(SyncStrategy::kSendOnly)) throw nb::value_error("bad strategy");
  std::vector<SharedStateLeaf> in(leaves.size());
  for (size_t i = 0; i < leaves.size(); ++i) {
    if (!dtype_valid(dtypes[i])) throw nb::value_error("bad dtype code");
    in[i] = {leaves[i].data(), leaves[i].shape(0), static_cast<DType>(dtypes[i]), dims[i]};
  }
  SyncOutcome out;
  {
    nb::gil_scoped_release unlocked;
    out = c.comm_->sync_shared_state(in, revision, static_cast<SyncStrategy>(strategy), structure);
  }
  nb::list received;
  for (ReceivedLeaf& r : out.received) received.append(nb::make_tuple(r.index, to_numpy(std::move(r.bytes))));
  nb::dict d;
  d["revision"] = out.revision;
  d["tx_bytes"] = out.tx_bytes;
  d["rx_bytes"] = out.rx_bytes;
  d["refetched_leaves"] = out.refetched_leaves;
  d["refused_peers"] = out.refused_peers;
  nb::dict phases;
  phases["hash"] = out.hash_s;
  phases["plan"] = out.plan_s;
  phases["fetch"] = out.fetch_s;
  phases["verify"] = out.verify_s;
  phases["finish"] = out.finish_s;
  d["seconds"] = phases;
  d["received"] = received;
  return d;
}

nb::dict stats_dict(const CommunicatorStats& s) {
  nb::dict d;
  d["bytes_sent"] = s.bytes_sent;
  d["bytes_received"] = s.bytes_received;
  d["collectives_done"] = s.collectives_done;
  d["collectives_failed"] = s.collectives_failed;
  d["topology_updates"] = s.topology_updates;
  d["shared_state_syncs"] = s.shared_state_syncs;
  d["shared_state_bytes_sent"] = s.shared_state_bytes_sent;
  d["shared_state_bytes_received"] = s.shared_state_bytes_received;
  d["shared_state_refetches"] = s.shared_state_refetches;
  d["epoch"] = s.epoch;
  d["seq"] = s.seq;
  return d;
}

}  // namespace
}  // namespace pccl

NB_MODULE(_pccl, m) {
  using namespace pccl;
  m.doc() = "jax_pccl native engine (master, ring communicator, XLA FFI handlers)";

  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const PcclError& e) {
      raise_python_error(e);
    }
  });

  nb::class_<Master>(m, "Master")
      .def(
          "__init__",
          [](Master* self, const std::string& host, uint16_t port, double heartbeat_timeout,
             nb::handle secret, uint32_t probe_ms, uint16_t probe_streams) {
            MasterConfig cfg;
            cfg.host = host;
            cfg.port = port;
            cfg.heartbeat_timeout_s = heartbeat_timeout;
            cfg.secret = secret_from_python(secret);
            cfg.probe_ms = probe_ms;
            cfg.probe_streams = probe_streams;
            new (self) Master(std::move(cfg));
          },
          "host"_a, "port"_a, "heartbeat_timeout"_a, "secret"_a = nb::none(),
          "probe_ms"_a = 1000, "probe_streams"_a = 4)
      .def("start", &Master::start)
      .def("stop", &Master::stop, nb::call_guard<nb::gil_scoped_release>())
      .def_prop_ro("port", &Master::port)
      .def("status_json", &Master::status_json);

  // The engine's codes, by name: the one source Python derives its tables
  // from (the values travel on the wire, so they are the engine's to fix).
  nb::dict dtypes, ops, formats, strategies, kinds;
  for (const CollectiveKindInfo& k : collective_kinds()) kinds[k.name] = static_cast<int>(k.kind);
  for (int i = 0; i < kNumDTypes; ++i) dtypes[dtype_name(static_cast<DType>(i))] = i;
  for (int i = 0; i < kNumReduceOps; ++i) ops[reduce_op_name(static_cast<ReduceOp>(i))] = i;
  for (int i = 0; i < kNumQuantizations; ++i) {
    formats[quantization_name(static_cast<Quantization>(i))] = i;
  }
  for (int i = 0; i <= static_cast<int>(SyncStrategy::kSendOnly); ++i) {
    strategies[sync_strategy_name(static_cast<SyncStrategy>(i))] = i;
  }
  m.attr("DTYPES") = dtypes;
  m.attr("REDUCE_OPS") = ops;
  m.attr("COLLECTIVE_KINDS") = kinds;
  m.attr("QUANTIZATIONS") = formats;
  m.attr("SYNC_STRATEGIES") = strategies;
  m.attr("PROTOCOL_VERSION") = kProtocolVersion;
  m.attr("VERSION") = PCCL_VERSION;  // the package's, from pyproject.toml (CMakeLists.txt)
  m.attr("DEFAULT_CONNECTIONS") = kDefaultRingConnections;
  m.attr("MAX_CONNECTIONS") = static_cast<int>(kMaxRingConnections);
  m.attr("MAX_CONCURRENCY") = static_cast<int>(kConcurrentSlots);
  m.attr("MAX_PROBE_MS") = kMaxProbeMillis;
  // The sanitizer this build carries ("" in a release build): the sanitized
  // test runs check that they really loaded it.
  m.attr("SANITIZER") = PCCL_SANITIZER;

  nb::class_<PyCommunicator>(m, "Communicator")
      .def(
          "__init__",
          [](PyCommunicator* self, const std::string& host, uint16_t port, uint32_t group,
             double timeout, const std::string& advertise_host, nb::handle secret,
             int connections, int concurrency) {
            new (self) PyCommunicator(host, port, group, timeout, advertise_host,
                                      secret_from_python(secret), connections, concurrency);
          },
          "host"_a, "port"_a, "group"_a, "timeout"_a, "advertise_host"_a,
          "secret"_a = nb::none(), "connections"_a = kDefaultRingConnections,
          "concurrency"_a = 1)
      .def(
          "connect", [](PyCommunicator& c, double t) { c.comm_->connect(t); },
          "admit_timeout"_a, nb::call_guard<nb::gil_scoped_release>())
      .def(
          "update_topology", [](PyCommunicator& c) { c.comm_->update_topology(); },
          nb::call_guard<nb::gil_scoped_release>())
      .def(
          "optimize_topology", [](PyCommunicator& c) { c.comm_->optimize_topology(); },
          nb::call_guard<nb::gil_scoped_release>())
      .def("are_peers_pending", [](PyCommunicator& c) { return c.comm_->are_peers_pending(); })
      .def_prop_ro("world_size", [](PyCommunicator& c) { return c.comm_->world_size(); })
      .def_prop_ro("group_world_size",
                   [](PyCommunicator& c) { return c.comm_->group_world_size(); })
      .def_prop_ro("rank", [](PyCommunicator& c) { return c.comm_->rank(); })
      .def_prop_ro("peer_id", [](PyCommunicator& c) { return c.comm_->peer_id(); })
      .def_prop_ro("connected", [](PyCommunicator& c) { return c.comm_->connected(); })
      .def_prop_ro("handle", [](PyCommunicator& c) { return c.handle_; })
      .def("stats", [](PyCommunicator& c) { return stats_dict(c.comm_->stats()); })
      .def("sync_shared_state", &sync_shared_state, "leaves"_a, "dtypes"_a, "dims"_a,
           "revision"_a, "strategy"_a, "structure"_a)
      .def("close", &PyCommunicator::close, nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "fetch_master_status",
      [](const std::string& host, uint16_t port, nb::handle secret, double timeout) {
        std::string key = secret_from_python(secret);
        nb::gil_scoped_release unlocked;
        return fetch_master_status(host, port, key, timeout);
      },
      "host"_a, "port"_a, "secret"_a.none(), "timeout"_a,
      "The master's status JSON, asked as an authenticated client (jax-pccl status)");

  m.def(
      "content_hash",
      [](const ByteView& bytes) {
        nb::gil_scoped_release unlocked;
        return xxh64(bytes.data(), bytes.shape(0));
      },
      "bytes"_a, "xxh64 of a contiguous byte view (the shared-state leaf hash)");

  // Tests only (issue #17): cross the 2^32 ticket boundary without 2^32
  // collectives, and make one FFI handler throw a non-PcclError exception.
  m.def(
      "_set_next_ticket_for_testing",
      [](PyCommunicator& c, uint64_t next) { c.comm_->set_next_ticket_for_testing(next); },
      "comm"_a, "next"_a);
  m.def(
      "_arm_handler_fault_for_testing",
      [](int where) {
        if (where < 0 || where > static_cast<int>(HandlerFault::kWait)) {
          throw nb::value_error("no such handler fault");
        }
        arm_handler_fault_for_testing(static_cast<HandlerFault>(where));
      },
      "where"_a);

  // The CUDA handler, where this build has one (-DJAX_PCCL_CUDA=ON).
#if defined(PCCL_WITH_CUDA)
  m.attr("CUDA_BUILT") = true;
#else
  m.attr("CUDA_BUILT") = false;
#endif
  m.def("ffi_targets_cuda", []() {
    nb::dict targets;
#if defined(PCCL_WITH_CUDA)
    targets["jax_pccl_collective"] =
        nb::capsule(reinterpret_cast<void*>(&CollectiveCudaHandler), "xla._CUSTOM_CALL_TARGET");
    targets["jax_pccl_all_reduce_start"] = nb::capsule(
        reinterpret_cast<void*>(&AllReduceStartCudaHandler), "xla._CUSTOM_CALL_TARGET");
    targets["jax_pccl_all_reduce_wait_bind"] = nb::capsule(
        reinterpret_cast<void*>(&AllReduceWaitBindCudaHandler), "xla._CUSTOM_CALL_TARGET");
    targets["jax_pccl_all_reduce_wait"] = nb::capsule(
        reinterpret_cast<void*>(&AllReduceWaitCudaHandler), "xla._CUSTOM_CALL_TARGET");
#endif
    return targets;
  });

  m.def("ffi_targets", []() {
    nb::dict targets;
    targets["jax_pccl_collective"] =
        nb::capsule(reinterpret_cast<void*>(&CollectiveCpuHandler), "xla._CUSTOM_CALL_TARGET");
    targets["jax_pccl_all_reduce_start"] =
        nb::capsule(reinterpret_cast<void*>(&AllReduceStartCpuHandler), "xla._CUSTOM_CALL_TARGET");
    targets["jax_pccl_all_reduce_wait_bind"] = nb::capsule(
        reinterpret_cast<void*>(&AllReduceWaitBindCpuHandler), "xla._CUSTOM_CALL_TARGET");
    targets["jax_pccl_all_reduce_wait"] =
        nb::capsule(reinterpret_cast<void*>(&AllReduceWaitCpuHandler), "xla._CUSTOM_CALL_TARGET");
    return targets;
  });
}
