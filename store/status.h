// Status: the result of a store operation. Errors are values at module
// boundaries; RocksDB statuses are mapped to these codes in exactly one place
// (store/rocksdb_store.cc), and these codes to gRPC in exactly one place
// (broker/grpc_status.cc).
//
// Thread-safety: a Status is a plain value; copies are independent.
#pragma once

#include <string>
#include <utility>

namespace icr::store {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,    // the caller's input breaks a rule
  kNotFound,           // no such record
  kFailedPrecondition, // the request conflicts with stored state
  kAborted,            // the store is shutting down
  kResourceExhausted,  // disk full, queue full
  kUnavailable,        // the store cannot write now (I/O error, read-only)
  kCorruption,         // stored data failed a checksum or could not be parsed
  kInternal,           // a bug
  kConflict,           // optimistic concurrency: the record changed (expected version)
  kPermissionDenied,   // the policy does not allow the caller this (docs/governance.md)
  kUnauthenticated,    // the caller has no identity the policy knows
};

class Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string m) {
    return {StatusCode::kInvalidArgument, std::move(m)};
  }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status FailedPrecondition(std::string m) {
    return {StatusCode::kFailedPrecondition, std::move(m)};
  }
  static Status Aborted(std::string m) { return {StatusCode::kAborted, std::move(m)}; }
  static Status ResourceExhausted(std::string m) {
    return {StatusCode::kResourceExhausted, std::move(m)};
  }
  static Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
  static Status Corruption(std::string m) { return {StatusCode::kCorruption, std::move(m)}; }
  static Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
  static Status Conflict(std::string m) { return {StatusCode::kConflict, std::move(m)}; }
  static Status PermissionDenied(std::string m) {
    return {StatusCode::kPermissionDenied, std::move(m)};
  }
  static Status Unauthenticated(std::string m) {
    return {StatusCode::kUnauthenticated, std::move(m)};
  }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string ToString() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

}  // namespace icr::store
