// libFuzzer target for gRPC request validation: the bytes of a request as
// they arrive on the wire are parsed as a PublishBatchRequest and as a
// SubscribeRequest (protobuf, as gRPC does), then run through the checks the
// service makes before anything is stored or a stream is opened:
// ValidateAndNormaliseEvent for every event, ValidateFilter and
// ValidateSubscriptionName. Properties checked beyond "no crash, hang or
// leak":
//  - a problem names where it is: it starts with the event's path
//    ("events[i]") and says what is wrong after ": ";
//  - normalising is idempotent: a valid event, validated again, is still
//    valid and serialises to the same bytes;
//  - a valid event is within the size limit and keeps its NHS number as 10
//    ASCII digits;
//  - a valid subscription name is 1..128 characters of [A-Za-z0-9._:-].
#include <google/protobuf/stubs/logging.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "broker/validation.h"
#include "icr/v1/broker.pb.h"

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property failed: %s\n", what);
    std::abort();
  }
}

constexpr int64_t kNowMicros = 1750000000LL * 1000000;

void CheckEvent(icr::v1::CareEvent* event, size_t index) {
  icr::broker::ValidationOptions options;
  const std::string path = "events[" + std::to_string(index) + "]";
  const std::string problem =
      icr::broker::ValidateAndNormaliseEvent(event, kNowMicros, options, path);
  if (!problem.empty()) {
    Check(problem.rfind(path, 0) == 0, "a problem starts with the event's path");
    Check(problem.find(": ") != std::string::npos, "a problem says what is wrong");
    return;
  }
  const std::string once = event->SerializeAsString();
  Check(once.size() <= options.max_event_bytes, "a valid event is within the size limit");
  Check(event->nhs_number().size() == 10, "a valid NHS number has 10 digits");
  for (char c : event->nhs_number()) Check(c >= '0' && c <= '9', "NHS number digits are ASCII");
  Check(icr::broker::ValidateAndNormaliseEvent(event, kNowMicros, options, path).empty(),
        "a normalised event is still valid");
  Check(event->SerializeAsString() == once, "normalising twice changes nothing");
}

bool NameChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '.' || c == '_' || c == ':' || c == '-';
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Protobuf logs every invalid UTF-8 string it refuses; that is expected here.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int n = static_cast<int>(size);
  icr::v1::PublishBatchRequest batch;
  if (batch.ParseFromArray(data, n)) {
    for (int i = 0; i < batch.events_size() && i < 64; ++i) {
      CheckEvent(batch.mutable_events(i), static_cast<size_t>(i));
    }
  }
  icr::v1::SubscribeRequest subscribe;
  if (subscribe.ParseFromArray(data, n)) {
    const std::string filter_problem = icr::broker::ValidateFilter(subscribe.filter());
    (void)filter_problem;
    const std::string& name = subscribe.subscription();
    if (!name.empty() && icr::broker::ValidateSubscriptionName(name).empty()) {
      Check(name.size() <= 128, "a valid subscription name has at most 128 characters");
      for (char c : name) Check(NameChar(c), "a valid subscription name uses [A-Za-z0-9._:-]");
    }
  }
  return 0;
}
