// Communicator::optimize_topology() (communicator.h): ask the master, probe
// the links it names, report, move to the ring it chooses.
#include <algorithm>
#include <chrono>

#include "common/log.h"
#include "peer/communicator.h"

namespace pccl {

namespace {
double seconds_since(Deadline::Clock::time_point t) {
  return std::chrono::duration<double>(Deadline::Clock::now() - t).count();
}
}  // namespace

void Communicator::optimize_topology() {
  if (async_.outstanding() > 0) throw unwaited_start_error("optimize_topology()");
  std::unique_lock<std::shared_mutex> lock(op_mu_);
  require_accepted();
  check_master();
  if (epoch_failed()) {
    // The members would not all come: the failed ones recover first.
    throw PeerFailure("optimize_topology() after a failure in this epoch: call "
                      "update_topology() first");
  }
  topology_fresh_ = false;
  if (ring_.size() < 3) return;  // one ring only; every member knows the size alike
  uint64_t registration = master_.registrations();
  master_.send_control(MsgType::kOptimize, OptimizeMsg{epoch_}.encode(), "optimizing the ring",
                       Deadline::after(config_.timeout_s));
  LinkPlanMsg plan;
  // The others come once their own step is over; probing takes its plan's time.
  auto got = master_.wait_link_plan(epoch_, registration, Deadline::after(2 * config_.timeout_s),
                                    &plan);
  if (got == MasterLink::PlanWait::kTimeout) {
    mark_broken(ErrorKind::kPeerFailure);
    throw PeerFailure("optimize_topology(): not every peer of the group called it within " +
                      std::to_string(2 * config_.timeout_s) + " s");
  }
  if (got == MasterLink::PlanWait::kPlan) {
    LinkReportMsg report = run_probes(plan);
    master_.send_control(MsgType::kLinkReport, report.encode(), "reporting link figures",
                         Deadline::after(config_.timeout_s));
  }
  settle(await_vote("optimize_topology(): the new ring"));
}

LinkReportMsg Communicator::run_probes(const LinkPlanMsg& plan) {
  LinkReportMsg report;
  report.epoch = plan.epoch;
  ProbeSpec spec;
  spec.epoch = plan.epoch;
  spec.streams = plan.streams;
  spec.seconds = plan.probe_ms * 1e-3;
  auto member = [this](uint64_t id) {
    return std::find_if(ring_.begin(), ring_.end(),
                        [id](const RingMember& m) { return m.peer_id == id; });
  };
  for (uint32_t round = 0; round < plan.rounds.size(); ++round) {
    const ProbeRound& r = plan.rounds[round];
    spec.round = round;
    // Each wait is bounded: a probe's window, then the answer.
    Deadline deadline = Deadline::after(spec.seconds + config_.timeout_s);
    auto started = Deadline::Clock::now();
    if (r.to != 0) {
      auto to = member(r.to);
      LinkFigure figure;
      figure.to = r.to;
      if (to != ring_.end()) figure = probe_link(links_, peer_id_, *to, spec, deadline, &cancel_);
      report.figures.push_back(figure);
      PCCL_LOG(kDebug, "peer " << peer_id_ << ": round " << round << ": link to peer " << r.to
                                << ": " << figure.bytes_per_s * 8e-6 << " Mbit/s, rtt "
                                << figure.rtt_us * 1e-3 << " ms, probed in " << seconds_since(started)
                                << " s");
    }
    // The round ends here once our own probe and the one we receive are
    // over: the next starts about when the others' does.
    if (r.from != 0 && !probes_.wait_probe(r.from, plan.epoch, round, deadline)) {
      PCCL_LOG(kWarn, "peer " << peer_id_ << ": peer " << r.from << "'s probe of round " << round
                              << " did not arrive; going on");
    }
    PCCL_LOG(kDebug, "peer " << peer_id_ << ": round " << round << " over after "
                              << seconds_since(started) << " s");
  }
  return report;
}

}  // namespace pccl
