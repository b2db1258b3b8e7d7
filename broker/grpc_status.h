// The one place store statuses become gRPC statuses.
#pragma once

#include <grpcpp/support/status.h>

#include "store/status.h"

namespace icr::broker {

grpc::Status ToGrpc(const store::Status& status);

}  // namespace icr::broker
