#include "topology/ring_local_search.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>

namespace pccl {

Neighbours::Neighbours(const ScaledCosts& cost, int k_wanted)
    : k(std::min(k_wanted, cost.size() - 1)) {
  const int n = cost.size();
  succ_.assign(static_cast<size_t>(n) * (k + 1), -1);
  pred_.assign(static_cast<size_t>(n) * (k + 1), -1);
  std::vector<std::pair<double, int>> row;
  for (int v = 0; v < n; ++v) {
    for (int out = 0; out < 2; ++out) {
      row.clear();
      for (int u = 0; u < n; ++u) {
        const double c = out ? cost(v, u) : cost(u, v);
        if (u != v && c < cost.penalty()) row.emplace_back(c, u);
      }
      const int len = std::min<int>(k, static_cast<int>(row.size()));
      std::partial_sort(row.begin(), row.begin() + len, row.end());
      int* list = &(out ? succ_ : pred_)[static_cast<size_t>(v) * (k + 1)];
      for (int i = 0; i < len; ++i) list[i] = row[i].second;
    }
  }
}

LocalSearch::LocalSearch(const ScaledCosts& cost, const Neighbours& near, RingTour& tour)
    : c_(cost), near_(near), tour_(tour), queued_(cost.size(), 0) {}

void LocalSearch::touch(int v) {
  if (queued_[v]) return;
  queued_[v] = 1;
  queue_.push_back(v);
}

double LocalSearch::apply(const Exchange& e) {
  // Before: p -> [b0 .. b1] -> [c0 .. c1] -> r.  After: p -> C -> B -> r.
  const int p = tour_.prev(e.b0), c0 = tour_.next(e.b1), r = tour_.next(e.c1);
  const double delta = c_(p, c0) + c_(e.c1, e.b0) + c_(e.b1, r) -
                       c_(p, e.b0) - c_(e.b1, c0) - c_(e.c1, r);
  tour_.exchange(e.b0, e.b1, e.c1);
  if (log_) log_->push_back({c0, e.c1, e.b1});  // exchanging C and B back
  for (int v : {p, e.b0, e.b1, c0, e.c1, r}) touch(v);
  return delta;
}

double LocalSearch::descend() {
  change_ = 0;
  while (!queue_.empty()) {
    const int v = queue_.front();
    queue_.pop_front();
    queued_[v] = 0;
    // A move re-queues v (it is one of the changed links' ends), so v is
    // looked at again until nothing around it gains.
    improve_around(v);
  }
  return change_;
}

bool LocalSearch::improve_around(int v) {
  // Every move that changes one of v's two links, and moves of the short
  // runs that start or end at v.
  if (or_3opt(v) || or_3opt(tour_.prev(v))) return true;
  int b = v, a = v;
  for (int len = 1; len <= 3; ++len) {
    if (len > 1) { b = tour_.next(b); a = tour_.prev(a); }
    if (tour_.size() - len < 2) break;
    if (or_opt(v, b)) return true;
    if (len > 1 && or_opt(a, v)) return true;
  }
  return false;
}

bool LocalSearch::take(const Exchange& e, double delta) {
  if (delta >= -kMinGain) return false;
  // apply() prices the exchange from the links it changes. A move that
  // priced itself otherwise is a bug, and one that would let a descent go
  // round in circles for ever: stop it here instead.
  const double applied = apply(e);
  if (!(applied < -kMinGain / 2)) {
    throw std::logic_error("ring search: a move expected to gain " + std::to_string(-delta) +
                           " changed the cost by " + std::to_string(applied));
  }
  change_ += applied;
  return true;
}

bool LocalSearch::or_opt(int a, int b) {
  // Lift the run [a .. b] out from between p and n, and put it, same
  // direction, between c and d = next(c) elsewhere: links p->a, b->n, c->d
  // become p->n, c->a, b->d. The candidates make c->a or b->d cheap, and
  // must gain already on that one new link (the usual pruning).
  const int p = tour_.prev(a), n = tour_.next(b);
  const double lifted = c_(p, a) + c_(b, n) - c_(p, n);
  if (lifted <= kMinGain) return false;
  const int last = tour_.prev(p);  // c ranges over [n .. last]
  for (int side = 0; side < 2; ++side) {
    const int* list = side == 0 ? near_.pred(a) : near_.succ(b);
    for (int i = 0; i < near_.k && list[i] >= 0; ++i) {
      const int u = list[i];
      const double gain = lifted - (side == 0 ? c_(u, a) : c_(b, u));
      if (gain <= kMinGain) break;
      const int c = side == 0 ? u : tour_.prev(u);
      if (!tour_.on_run(c, n, last)) continue;
      const int d = tour_.next(c);
      const double delta = c_(c, a) + c_(b, d) - c_(c, d) - lifted;
      // p -> [a..b] -> [n..c] -> d  becomes  p -> [n..c] -> [a..b] -> d
      if (take({a, b, c}, delta)) return true;
    }
  }
  return false;
}

bool LocalSearch::or_3opt(int x) {
  // Links x->x1, y0->y, z->z1 become x->y, z->x1, y0->z1: the runs
  // [x1 .. y0] and [y .. z] change places. y is a cheap successor of x and z
  // a cheap predecessor of x1, each step gaining on what it removed.
  const int x1 = tour_.next(x), before_x = tour_.prev(x);
  const int* ys = near_.succ(x);
  for (int i = 0; i < near_.k && ys[i] >= 0; ++i) {
    const int y = ys[i];
    const double g1 = c_(x, x1) - c_(x, y);
    if (g1 <= kMinGain) break;
    if (y == x1) continue;
    const int y0 = tour_.prev(y);
    const int* zs = near_.pred(x1);
    for (int j = 0; j < near_.k && zs[j] >= 0; ++j) {
      const int z = zs[j];
      const double g2 = g1 + c_(y0, y) - c_(z, x1);
      if (g2 <= kMinGain) break;
      if (!tour_.on_run(z, y, before_x)) continue;
      const int z1 = tour_.next(z);
      const double delta = c_(y0, z1) - c_(z, z1) - g2;
      if (take({x1, y0, z}, delta)) return true;
    }
  }
  return false;
}

}  // namespace pccl
