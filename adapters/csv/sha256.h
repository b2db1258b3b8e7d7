// SHA-256 (FIPS 180-4), for the content hash that makes a CSV row's
// source_message_id. Internal to adapters/csv; not a security boundary.
// Thread-safety: a Sha256 object is used by one thread at a time.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace icr::adapters::csv {

class Sha256 {
 public:
  Sha256();
  void Update(std::string_view data);
  // The digest of everything passed to Update. Call once.
  std::array<uint8_t, 32> Finish();

  // Lower-case hex of a digest's first `bytes` bytes (at most 32).
  static std::string Hex(const std::array<uint8_t, 32>& digest, size_t bytes = 32);

 private:
  void Block(const uint8_t* p);

  uint32_t h_[8];
  uint8_t buffer_[64];
  size_t buffered_ = 0;
  uint64_t length_ = 0;  // bytes
};

}  // namespace icr::adapters::csv
