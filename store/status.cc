#include "store/status.h"

namespace icr::store {

std::string Status::ToString() const {
  static const char* const kNames[] = {"OK",          "INVALID_ARGUMENT", "NOT_FOUND",
                                       "FAILED_PRECONDITION", "ABORTED", "RESOURCE_EXHAUSTED",
                                       "UNAVAILABLE", "CORRUPTION",       "INTERNAL",
                                       "CONFLICT",    "PERMISSION_DENIED", "UNAUTHENTICATED"};
  std::string s = kNames[static_cast<int>(code_)];
  if (!message_.empty()) s += ": " + message_;
  return s;
}

}  // namespace icr::store
