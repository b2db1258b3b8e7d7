#include "broker/grpc_status.h"

namespace icr::broker {

grpc::Status ToGrpc(const store::Status& s) {
  using store::StatusCode;
  switch (s.code()) {
    case StatusCode::kOk:
      return grpc::Status::OK;
    case StatusCode::kInvalidArgument:
      return {grpc::StatusCode::INVALID_ARGUMENT, s.message()};
    case StatusCode::kNotFound:
      return {grpc::StatusCode::NOT_FOUND, s.message()};
    case StatusCode::kFailedPrecondition:
      return {grpc::StatusCode::FAILED_PRECONDITION, s.message()};
    case StatusCode::kAborted:
      return {grpc::StatusCode::UNAVAILABLE,
              "the broker is shutting down; retry with the same source_message_id: " +
                  s.message()};
    case StatusCode::kResourceExhausted:
      return {grpc::StatusCode::RESOURCE_EXHAUSTED, s.message()};
    case StatusCode::kUnavailable:
      return {grpc::StatusCode::UNAVAILABLE, s.message()};
    case StatusCode::kCorruption:
      return {grpc::StatusCode::DATA_LOSS, s.message()};
    case StatusCode::kInternal:
      return {grpc::StatusCode::INTERNAL, s.message()};
    case StatusCode::kConflict:
      return {grpc::StatusCode::ABORTED, s.message()};
    case StatusCode::kPermissionDenied:
      return {grpc::StatusCode::PERMISSION_DENIED, s.message()};
    case StatusCode::kUnauthenticated:
      return {grpc::StatusCode::UNAUTHENTICATED, s.message()};
  }
  return {grpc::StatusCode::UNKNOWN, s.message()};
}

}  // namespace icr::broker
