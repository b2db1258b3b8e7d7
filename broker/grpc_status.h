// The one place store statuses become gRPC statuses.
#pragma once

#include <grpcpp/support/status.h>

#include <string>

#include "store/status.h"

namespace icr::broker {

grpc::Status ToGrpc(const store::Status& status);

// INVALID_ARGUMENT with `message` ("<field>: <rule>").
inline grpc::Status Invalid(const std::string& message) {
  return {grpc::StatusCode::INVALID_ARGUMENT, message};
}

}  // namespace icr::broker
