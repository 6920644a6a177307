// A ring to plan again, off the master's loop, and what came of it: the
// currency between MasterCore (pure: it makes jobs and judges results) and
// the BackgroundPlanner thread that runs them (master/background_planner.h).
#pragma once
#include <cstdint>
#include <vector>

#include "topology/ring_planner.h"

namespace pccl {

// One group's members (the matrix's rows, in this order) and the cost of
// every directed link between them when the job was made.
struct PlanJob {
  uint32_t group = 0;
  std::vector<uint64_t> members;
  CostMatrix costs;
  SolverOptions options;  // its budget is the job's; options.stop is the planner's
};

struct PlanResult {
  uint32_t group = 0;
  std::vector<uint64_t> members;
  RingPlan plan;  // order indexes members
};

}  // namespace pccl
