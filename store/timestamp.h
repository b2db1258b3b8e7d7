// google.protobuf.Timestamp <-> microseconds since the Unix epoch, the unit
// the store and the broker keep times in. Header-only; pure functions. The
// broker uses them as icr::broker::ToMicros etc. (broker/timestamp.h).
#pragma once

#include <google/protobuf/timestamp.pb.h>

#include <cstdint>

namespace icr::store {

inline int64_t ToMicros(const google::protobuf::Timestamp& t) {
  return t.seconds() * 1000000 + t.nanos() / 1000;
}

// Correct for times before 1970 too (nanos stay in 0..999,999,999).
inline void SetTimestamp(google::protobuf::Timestamp* t, int64_t micros) {
  int64_t seconds = micros / 1000000;
  int64_t rest = micros % 1000000;
  if (rest < 0) {
    rest += 1000000;
    --seconds;
  }
  t->set_seconds(seconds);
  t->set_nanos(static_cast<int32_t>(rest * 1000));
}

inline google::protobuf::Timestamp MakeTimestamp(int64_t micros) {
  google::protobuf::Timestamp t;
  SetTimestamp(&t, micros);
  return t;
}

}  // namespace icr::store
