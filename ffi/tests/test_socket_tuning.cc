// Socket tuning for ring connections: the congestion control chosen through
// $JAX_PCCL_TCP_CONGESTION reaches the socket, and a name the kernel refuses
// is a clear PcclError, not a silent fallback.
#include <cstdlib>
#include <string>

#include <unistd.h>

#include "common/errors.h"
#include "tests/check.h"
#include "tests/loopback_pair.h"
#include "transport/socket.h"

using namespace pccl;

namespace {

void test_environment_sets_congestion_control() {
  Socket server;
  Socket client = connected_pair(&server);
  // reno is built into every Linux kernel and always allowed.
  setenv(kCongestionControlEnv, "reno", 1);
  client.tune_for_bulk();
  server.tune_for_bulk();
  CHECK_EQ(client.congestion_control(), std::string("reno"));
  CHECK_EQ(server.congestion_control(), std::string("reno"));
  unsetenv(kCongestionControlEnv);
}

void test_unset_environment_keeps_the_system_default() {
  Socket server;
  Socket client = connected_pair(&server);
  std::string before = client.congestion_control();
  unsetenv(kCongestionControlEnv);
  client.tune_for_bulk();
  CHECK(!before.empty());
  CHECK_EQ(client.congestion_control(), before);
}

void test_refused_name_is_a_clear_error() {
  Socket server;
  Socket client = connected_pair(&server);
  std::string before = client.congestion_control();
  setenv(kCongestionControlEnv, "no-such-cc", 1);
  bool threw = false;
  try {
    client.tune_for_bulk();
  } catch (const PcclError& e) {
    threw = true;
    std::string what = e.what();
    CHECK(what.find("no-such-cc") != std::string::npos);
    CHECK(what.find(kCongestionControlEnv) != std::string::npos);
  }
  unsetenv(kCongestionControlEnv);
  CHECK(threw);
  CHECK_EQ(client.congestion_control(), before);  // unchanged
}

}  // namespace

int main() {
  test_environment_sets_congestion_control();
  test_unset_environment_keeps_the_system_default();
  test_refused_name_is_a_clear_error();
  return check_summary("test_socket_tuning");
}
