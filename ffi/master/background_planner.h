// Improves large rings after optimize_topology() has answered. Beyond the
// exact solver's sizes the master's loop gives the planner a fraction of a
// second (it must not stall everyone's membership traffic); this worker gives
// the same figures seconds more on a thread of its own. The master core keeps
// the result and, at the group's next optimize_topology(), takes it over its
// own plan if it is a ring of the same members and better on the figures of
// that moment (MasterCore::choose_plan); PCCL too drops a background solution
// when someone joined meanwhile.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "master/plan_job.h"

namespace pccl {

class BackgroundPlanner {
 public:
  BackgroundPlanner();
  ~BackgroundPlanner();  // stop()
  BackgroundPlanner(const BackgroundPlanner&) = delete;
  BackgroundPlanner& operator=(const BackgroundPlanner&) = delete;

  // Queues the job; a job of the same group still waiting is replaced (its
  // figures are older). A job already running finishes.
  void submit(PlanJob job);
  // Results finished since the last call, oldest first.
  std::vector<PlanResult> take_results();
  // Cancels the running search (it returns its best ring so far, which is
  // dropped), forgets the queue and joins the thread. Idempotent.
  void stop();

 private:
  void run();

  std::mutex mu_;
  std::condition_variable wake_;
  std::map<uint32_t, PlanJob> queued_;  // by group
  std::deque<PlanResult> done_;
  bool stopping_ = false;
  std::atomic<bool> cancel_{false};
  std::thread thread_;
};

}  // namespace pccl
