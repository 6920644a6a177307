// A connected TCP pair over 127.0.0.1 for tests that need real sockets.
#pragma once
#include <unistd.h>

#include "tests/check.h"
#include "transport/socket.h"

namespace pccl {

// The client side; the accepted server side lands in *server.
inline Socket connected_pair(Socket* server) {
  Socket listener = Socket::listen_on("127.0.0.1", 0, 1);
  Socket client = Socket::connect_to("127.0.0.1", listener.local_port(), Deadline::after(5),
                                     nullptr);
  for (int i = 0; i < 500 && !server->valid(); ++i) {
    *server = listener.accept_now();
    if (!server->valid()) usleep(1000);
  }
  CHECK(server->valid());
  return client;
}

}  // namespace pccl
