#include "store/keys.h"

namespace icr::store::keys {

void AppendPosition(uint64_t position, std::string* out) {
  char buf[kPositionLength];
  for (size_t i = 0; i < kPositionLength; ++i) {
    buf[i] = static_cast<char>((position >> (8 * (kPositionLength - 1 - i))) & 0xff);
  }
  out->append(buf, kPositionLength);
}

std::string EncodePosition(uint64_t position) {
  std::string s;
  s.reserve(kPositionLength);
  AppendPosition(position, &s);
  return s;
}

bool DecodePosition(std::string_view in, uint64_t* position) {
  if (in.size() != kPositionLength) return false;
  uint64_t v = 0;
  for (size_t i = 0; i < kPositionLength; ++i) {
    v = (v << 8) | static_cast<uint8_t>(in[i]);
  }
  *position = v;
  return true;
}

std::string PatientKey(std::string_view nhs_number, uint64_t position) {
  std::string s;
  s.reserve(nhs_number.size() + kPositionLength);
  s.append(nhs_number);
  AppendPosition(position, &s);
  return s;
}

bool ParsePatientKey(std::string_view key, std::string_view* nhs_number, uint64_t* position) {
  if (key.size() != kPatientKeyLength) return false;
  *nhs_number = key.substr(0, kNhsNumberLength);
  return DecodePosition(key.substr(kNhsNumberLength), position);
}

std::string IdempotencyKey(std::string_view source_system_id, std::string_view source_message_id) {
  std::string s;
  s.reserve(source_system_id.size() + 1 + source_message_id.size());
  s.append(source_system_id);
  s.push_back('\0');
  s.append(source_message_id);
  return s;
}

std::string ParkedPrefix(std::string_view name) {
  std::string s;
  s.reserve(name.size() + 1);
  s.append(name);
  s.push_back('\0');
  return s;
}

std::string ParkedKey(std::string_view name, uint64_t position) {
  std::string s;
  s.reserve(name.size() + 1 + kPositionLength);
  s.append(name);
  s.push_back('\0');
  AppendPosition(position, &s);
  return s;
}

bool ParseParkedKey(std::string_view key, std::string_view* name, uint64_t* position) {
  if (key.size() < 1 + kPositionLength) return false;
  const size_t sep = key.size() - kPositionLength - 1;
  if (key[sep] != '\0') return false;
  *name = key.substr(0, sep);
  return DecodePosition(key.substr(sep + 1), position);
}

}  // namespace icr::store::keys
