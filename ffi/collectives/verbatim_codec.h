// The wire form of the collectives that only move bytes (all-gather,
// broadcast): a chunk's bytes are its elements, received straight into the
// output where they belong and forwarded from there. The first step sends
// this peer's input, wherever the caller keeps it.
#pragma once
#include <cstddef>
#include <cstdint>

#include "collectives/ring_lanes.h"

namespace pccl {

class VerbatimCodec : public LaneCodec {
 public:
  // `in` holds elements [in_begin, in_begin + n) of the whole buffer `out`.
  VerbatimCodec(const uint8_t* in, size_t in_begin, uint8_t* out, size_t esize)
      : in_(in), in_begin_(in_begin), out_(out), esize_(esize) {}

  size_t wire_bytes(const Segment& c) const override { return (c.end - c.begin) * esize_; }

  const uint8_t* send_source(size_t, int step, const Segment& c) override {
    return step == 0 ? in_ + (c.begin - in_begin_) * esize_ : out_ + c.begin * esize_;
  }

  uint8_t* recv_target(size_t, int, const Segment& c) override { return out_ + c.begin * esize_; }

  size_t absorb(size_t, int, const Segment&, size_t, size_t landed) override { return landed; }

 private:
  const uint8_t* in_;
  size_t in_begin_;
  uint8_t* out_;
  size_t esize_;
};

}  // namespace pccl
