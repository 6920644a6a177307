#include "master/background_planner.h"

#include <exception>
#include <utility>

#include "common/log.h"

namespace pccl {

namespace {
// Results the master has not collected yet: it collects them every loop
// (200 ms at most), so more than this means it stopped collecting.
constexpr size_t kMaxDone = 64;
}  // namespace

BackgroundPlanner::BackgroundPlanner() : thread_([this] { run(); }) {}

BackgroundPlanner::~BackgroundPlanner() { stop(); }

void BackgroundPlanner::submit(PlanJob job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    uint32_t group = job.group;
    queued_[group] = std::move(job);
  }
  wake_.notify_one();
}

std::vector<PlanResult> BackgroundPlanner::take_results() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<PlanResult> out(std::make_move_iterator(done_.begin()),
                              std::make_move_iterator(done_.end()));
  done_.clear();
  return out;
}

void BackgroundPlanner::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    queued_.clear();
  }
  cancel_.store(true);
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void BackgroundPlanner::run() {
  for (;;) {
    PlanJob job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [this] { return stopping_ || !queued_.empty(); });
      if (stopping_) return;
      job = std::move(queued_.begin()->second);
      queued_.erase(queued_.begin());
    }
    job.options.stop = &cancel_;
    PlanResult result;
    try {
      result.plan = plan_ring(job.costs, job.options);
    } catch (const std::exception& e) {
      // The core built the matrix; a throw here is a bug, not the peers'
      // doing: log it and keep the ring the loop chose.
      PCCL_LOG(kError, "background ring planner failed for group " << job.group << ": "
                                                                  << e.what());
      continue;
    }
    result.group = job.group;
    result.members = std::move(job.members);
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;  // cancelled mid-search: not the ring it would have found
    if (done_.size() >= kMaxDone) done_.pop_front();
    done_.push_back(std::move(result));
  }
}

}  // namespace pccl
