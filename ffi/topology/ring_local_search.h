// The moves of the ring search (ring_search.h) and the descent that applies
// them until none gains: first improvement, driven by a queue of peers whose
// links changed ("don't look bits"), so a descent after a kick only looks
// near the kick.
#pragma once
#include <deque>
#include <cstddef>
#include <vector>

#include "topology/ring_costs.h"
#include "topology/ring_tour.h"

namespace pccl {

// Each peer's k cheapest successors and predecessors, cheapest first (ties
// by peer number, so the lists do not depend on the sort's whims), over
// usable links only: a move never gains by making a broken link, and where
// few links are usable a list padded with broken ones would send every peer
// to the same few candidates. A list ends at the first -1.
struct Neighbours {
  Neighbours(const ScaledCosts& cost, int k);
  const int* succ(int v) const { return &succ_[static_cast<size_t>(v) * (k + 1)]; }
  const int* pred(int v) const { return &pred_[static_cast<size_t>(v) * (k + 1)]; }
  int k;
  std::vector<int> succ_, pred_;
};

// One exchange of adjacent runs, as RingTour::exchange takes it.
struct Exchange {
  int b0, b1, c1;
};

class LocalSearch {
 public:
  LocalSearch(const ScaledCosts& cost, const Neighbours& near, RingTour& tour);
  // Queues v: its links changed, so moves around it may gain again.
  void touch(int v);
  // Applies an exchange, recording its undo in the log if one is set, and
  // queues the peers whose links it changes. Returns the change in cost.
  double apply(const Exchange& e);
  // Applies improving moves until the queue is empty; returns the (negative)
  // change in cost.
  double descend();
  // Where apply() records undos (last applied last); nullptr: nowhere.
  void record_into(std::vector<Exchange>* log) { log_ = log; }

 private:
  bool improve_around(int v);
  bool or_opt(int a, int b);   // moves the run [a .. b]
  bool or_3opt(int x);         // breaks the link x -> next(x)
  bool take(const Exchange& e, double delta);  // applies e if delta gains

  const ScaledCosts& c_;
  const Neighbours& near_;
  RingTour& tour_;
  std::deque<int> queue_;
  std::vector<char> queued_;
  std::vector<Exchange>* log_ = nullptr;
  double change_ = 0;  // of the descent under way
};

}  // namespace pccl
