// The master's background ring planner (master/background_planner.h) alone:
// a job's result is the planner's answer for those figures, a waiting job of
// the same group is replaced by a newer one, and stop() cancels a long search
// at once instead of waiting out its budget, dropping what it had.
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "master/background_planner.h"
#include "tests/check.h"
#include "tests/ring_instances.h"

using namespace pccl;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

PlanJob job_of(uint32_t group, const CostMatrix& costs, const SolverOptions& options) {
  PlanJob job;
  job.group = group;
  for (size_t i = 0; i < costs.size(); ++i) job.members.push_back(1000 + group * 100 + i);
  job.costs = costs;
  job.options = options;
  return job;
}

// Kicks, not time, bound the search: the same answer as plan_ring() here.
SolverOptions kick_bound(long kicks) {
  SolverOptions o;
  o.time_budget_s = 1e6;
  o.max_kicks = kicks;
  o.seed = 7;
  return o;
}

// The results of `want` jobs, waiting up to a generous deadline for them.
std::vector<PlanResult> wait_for(BackgroundPlanner& planner, size_t want) {
  std::vector<PlanResult> got;
  auto t0 = std::chrono::steady_clock::now();
  while (got.size() < want && seconds_since(t0) < 120) {
    for (PlanResult& r : planner.take_results()) got.push_back(std::move(r));
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return got;
}

void test_result_is_the_planners_answer() {
  BackgroundPlanner planner;
  const CostMatrix costs = ring_instances::clustered(40, 4, 3);
  PlanJob job = job_of(3, costs, kick_bound(200));
  const std::vector<uint64_t> members = job.members;
  planner.submit(job);
  std::vector<PlanResult> got = wait_for(planner, 1);
  if (!CHECK_EQ(got.size(), 1u)) return;
  const RingPlan want = plan_ring(costs, kick_bound(200));
  CHECK(got[0].group == 3 && got[0].members == members);
  CHECK(got[0].plan.order == want.order);
  CHECK(got[0].plan.bottleneck == want.bottleneck && got[0].plan.total == want.total);
  CHECK(planner.take_results().empty());  // taken once
}

// While a long job of group 1 runs, group 2's first job waits and is
// replaced by its second: one result per group, group 2's from the second
// job's figures.
void test_waiting_job_is_replaced() {
  BackgroundPlanner planner;
  SolverOptions slow = kick_bound(0);
  slow.time_budget_s = 1.0;
  planner.submit(job_of(1, ring_instances::uniform(128, 1), slow));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // group 1 is running
  const CostMatrix older = ring_instances::uniform(20, 2);
  const CostMatrix newer = ring_instances::uniform(20, 3);
  planner.submit(job_of(2, older, kick_bound(10)));
  planner.submit(job_of(2, newer, kick_bound(10)));
  std::vector<PlanResult> got = wait_for(planner, 2);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  for (PlanResult& r : planner.take_results()) got.push_back(std::move(r));  // none expected
  if (!CHECK_EQ(got.size(), 2u)) return;
  CHECK(got[0].group == 1 && got[1].group == 2);
  CHECK(got[1].plan.order == plan_ring(newer, kick_bound(10)).order);  // the newer figures
  CHECK(got[1].plan.order != plan_ring(older, kick_bound(10)).order);
}

void test_stop_cancels_a_long_search() {
  BackgroundPlanner planner;
  SolverOptions long_budget = kick_bound(0);
  long_budget.time_budget_s = 60;
  planner.submit(job_of(1, ring_instances::uniform(256, 5), long_budget));
  planner.submit(job_of(2, ring_instances::uniform(64, 6), long_budget));  // waits
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto t0 = std::chrono::steady_clock::now();
  planner.stop();
  // Half the budget: it did not wait the search out (it takes milliseconds).
  CHECK(seconds_since(t0) < 30);
  CHECK(planner.take_results().empty());  // a cancelled search's ring is dropped
  planner.submit(job_of(3, ring_instances::uniform(8, 7), kick_bound(1)));  // ignored
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK(planner.take_results().empty());
  planner.stop();  // idempotent
}

}  // namespace

int main() {
  test_result_is_the_planners_answer();
  test_waiting_job_is_replaced();
  test_stop_cancels_a_long_search();
  return check_summary("test_background_planner");
}
