// The XLA layer's Python-free pieces (ffi/xla/completion_executor.h and
// ffi/xla/ticket_words.h): where XLA's wait futures are completed, and how
// 64-bit tickets ride in int32 words (issue #17, defects 1 and 6).
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tests/check.h"
#include "xla/completion_executor.h"
#include "xla/ticket_words.h"

using namespace pccl;

namespace {

using Clock = std::chrono::steady_clock;

std::string this_thread_name() {
  char name[16] = {};
  pthread_getname_np(pthread_self(), name, sizeof(name));
  return name;
}

// A latch that gives up after a bound, so that a broken executor fails the
// test instead of hanging it.
class Gate {
 public:
  void open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  bool wait(double seconds = 10.0) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::duration<double>(seconds), [&] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

void test_tasks_run_on_named_threads_not_the_caller() {
  auto executor = CompletionExecutor::create();
  Gate ran;
  std::thread::id where;
  std::string name;
  executor->post([&] {
    where = std::this_thread::get_id();
    name = this_thread_name();
    ran.open();
  });
  CHECK(ran.wait());
  CHECK(where != std::this_thread::get_id());
  CHECK_EQ(name, std::string(kCompletionThreadName));
  executor->close();
}

// The deadlock of issue #17 in miniature: a continuation blocks until a task
// posted after it has run. One thread would wait for itself; a new one runs it.
void test_a_blocked_task_does_not_starve_the_next_one() {
  auto executor = CompletionExecutor::create(4);
  Gate second_ran, first_done;
  executor->post([&] {
    executor->post([&] { second_ran.open(); });
    CHECK(second_ran.wait());  // blocks this thread until the other task ran
    first_done.open();
  });
  CHECK(first_done.wait());
  CHECK_EQ(executor->threads(), size_t{2});
  executor->close();
}

void test_growth_is_bounded_and_queued_tasks_still_run() {
  auto executor = CompletionExecutor::create(2);
  Gate release;
  std::atomic<int> started{0}, finished{0};
  for (int i = 0; i < 5; ++i) {
    executor->post([&] {
      ++started;
      release.wait();
      ++finished;
    });
  }
  auto until = Clock::now() + std::chrono::seconds(10);
  while (started.load() < 2 && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK_EQ(started.load(), 2);  // the bound: the other three queue
  CHECK_EQ(executor->threads(), size_t{2});
  release.open();
  executor->close();  // runs the queued ones, then joins
  CHECK_EQ(finished.load(), 5);
}

void test_close_runs_what_was_posted_and_later_posts_run_inline() {
  auto executor = CompletionExecutor::create(1);
  Gate hold;
  std::atomic<int> ran{0};
  executor->post([&] { hold.wait(); ++ran; });
  for (int i = 0; i < 3; ++i) executor->post([&] { ++ran; });
  std::thread closer([&] { executor->close(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  hold.open();
  closer.join();
  CHECK_EQ(ran.load(), 4);  // nothing posted is lost: each is a future XLA waits for
  std::thread::id where;
  executor->post([&] { where = std::this_thread::get_id(); });
  CHECK(where == std::this_thread::get_id());
}

void test_close_from_one_of_its_own_threads_returns() {
  auto executor = CompletionExecutor::create();
  Gate closed;
  executor->post([&] {
    executor->close();  // a continuation that closes the communicator
    closed.open();
  });
  CHECK(closed.wait());
  executor.reset();  // the detached thread keeps what it needs alive
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

void test_tickets_round_trip_through_int32_words() {
  const uint64_t tickets[] = {0, 1, (1ull << 31) - 1, 1ull << 31, (1ull << 32) - 1, 1ull << 32,
                              (1ull << 32) + 1, 1ull << 63, ~0ull - 1, ~0ull};
  for (uint64_t t : tickets) {
    int32_t words[kTicketWords + 1] = {0, 0, 12345};
    store_ticket(words, t);
    CHECK_EQ(load_ticket(words), t);
    CHECK_EQ(words[kTicketWords], 12345);  // the next slot untouched
  }
  CHECK_EQ(ticket_leaves(3), size_t{1});
  CHECK_EQ(ticket_leaves(7), size_t{3});
  CHECK_EQ(ticket_leaves(1), size_t{0});
  CHECK_EQ(ticket_leaves(4), size_t{0});
  CHECK_EQ(ticket_leaves(0), size_t{0});
}

}  // namespace

int main() {
  test_tasks_run_on_named_threads_not_the_caller();
  test_a_blocked_task_does_not_starve_the_next_one();
  test_growth_is_bounded_and_queued_tasks_still_run();
  test_close_runs_what_was_posted_and_later_posts_run_inline();
  test_close_from_one_of_its_own_threads_returns();
  test_tickets_round_trip_through_int32_words();
  return check_summary("test_completion_executor");
}
