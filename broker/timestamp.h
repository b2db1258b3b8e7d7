// The store's Timestamp helpers (store/timestamp.h), for the broker's code.
#pragma once

#include "store/timestamp.h"

namespace icr::broker {

using store::MakeTimestamp;
using store::SetTimestamp;
using store::ToMicros;

// Within google.protobuf.Timestamp's own range (years 1 to 9999, nanos
// 0..999,999,999), so ToMicros cannot overflow.
inline bool InTimestampRange(const google::protobuf::Timestamp& t) {
  constexpr int64_t kMinSeconds = -62135596800, kMaxSeconds = 253402300799;
  return t.seconds() >= kMinSeconds && t.seconds() <= kMaxSeconds && t.nanos() >= 0 &&
         t.nanos() <= 999999999;
}

}  // namespace icr::broker
