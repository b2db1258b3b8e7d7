// Key encodings of the RocksDB store's column families.
//
//   events       BE64(position)                              -> CareEvent bytes
//   patient      nhs_number (10 bytes) + BE64(position)      -> empty
//   idempotency  source_system_id + '\0' + source_message_id -> BE64(position)
//   cursors      subscription name                           -> opaque bytes
//   parked       name + '\0' + BE64(position)                -> opaque bytes
//
// Positions are 8-byte big-endian so that RocksDB's bytewise order is numeric
// order. The patient key's first kNhsNumberLength bytes are its prefix (the
// column family's fixed prefix extractor), so a person's events are one
// prefix seek. Names and source system ids never contain '\0' (the broker
// validates them), so '\0' is an unambiguous separator.
//
// Thread-safety: pure functions on values; safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace icr::store::keys {

// Length of an NHS number and of the patient column family's key prefix.
inline constexpr size_t kNhsNumberLength = 10;
// Length of an encoded position.
inline constexpr size_t kPositionLength = 8;
// Length of a patient key.
inline constexpr size_t kPatientKeyLength = kNhsNumberLength + kPositionLength;

// 8-byte big-endian encoding of `position`.
std::string EncodePosition(uint64_t position);
// Appends the 8-byte big-endian encoding of `position` to `*out`.
void AppendPosition(uint64_t position, std::string* out);
// Decodes exactly 8 big-endian bytes. Returns false if `in` is not 8 bytes.
bool DecodePosition(std::string_view in, uint64_t* position);

// nhs_number + BE64(position).
// REQUIRES: nhs_number.size() == kNhsNumberLength.
std::string PatientKey(std::string_view nhs_number, uint64_t position);
// Splits a patient key. Returns false if `key` is not kPatientKeyLength bytes.
bool ParsePatientKey(std::string_view key, std::string_view* nhs_number, uint64_t* position);

// source_system_id + '\0' + source_message_id.
std::string IdempotencyKey(std::string_view source_system_id, std::string_view source_message_id);

// name + '\0': the common prefix of all parked keys of one subscription.
std::string ParkedPrefix(std::string_view name);
// name + '\0' + BE64(position).
std::string ParkedKey(std::string_view name, uint64_t position);
// Splits a parked key. Returns false if it has no separator or the position
// part is not 8 bytes.
bool ParseParkedKey(std::string_view key, std::string_view* name, uint64_t* position);

}  // namespace icr::store::keys
