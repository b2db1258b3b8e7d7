#include "broker/nhs_number.h"

#include <cstdint>
#include <cstdio>

#include "broker/utf8.h"

namespace icr::broker {
namespace {

// Whether `cp` is a decimal digit other than ASCII 0-9 (Unicode category Nd:
// full-width, Arabic-Indic, Devanagari, Thai, ... digits). Each script's
// digits are ten consecutive code points from its zero.
bool IsNonAsciiDigit(int32_t cp) {
  static constexpr int32_t kZeros[] = {
      0x0660,  0x06F0,  0x07C0,  0x0966,  0x09E6,  0x0A66,  0x0AE6,  0x0B66,  0x0BE6,
      0x0C66,  0x0CE6,  0x0D66,  0x0DE6,  0x0E50,  0x0ED0,  0x0F20,  0x1040,  0x1090,
      0x17E0,  0x1810,  0x1946,  0x19D0,  0x1A80,  0x1A90,  0x1B50,  0x1BB0,  0x1C40,
      0x1C50,  0xA620,  0xA8D0,  0xA900,  0xA9D0,  0xA9F0,  0xAA50,  0xABF0,  0xFF10,
      0x104A0, 0x11066, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E950, 0x1FBF0};
  for (int32_t zero : kZeros) {
    if (cp >= zero && cp <= zero + 9) return true;
  }
  return false;
}

}  // namespace

std::optional<int> NhsCheckDigit(std::string_view nine_digits) {
  int sum = 0;
  for (int i = 0; i < 9; ++i) sum += (nine_digits[i] - '0') * (10 - i);
  int check = 11 - (sum % 11);
  if (check == 11) check = 0;
  if (check == 10) return std::nullopt;
  return check;
}

std::string NhsNumberProblem(std::string_view nhs) {
  if (nhs.empty()) return "is required (10 digits)";
  // Characters, not bytes: "９" (a full-width nine) is three bytes of UTF-8.
  size_t characters = 0;
  for (size_t i = 0; i < nhs.size();) {
    const int32_t c = NextUtf8Character(nhs, &i);
    ++characters;
    if (IsNonAsciiDigit(c)) {
      char code[16];
      std::snprintf(code, sizeof code, "U+%04X", static_cast<unsigned>(c));
      return "must contain ASCII digits 0-9 only (character " + std::to_string(characters) +
             " is " + code + ", a " + (c >= 0xFF10 && c <= 0xFF19 ? "full-width" : "non-ASCII") +
             " digit; retype the number with 0-9)";
    }
  }
  if (characters != 10) {
    return "must be exactly 10 digits (got " + std::to_string(characters) + " characters)";
  }
  // Ten characters: any that is not an ASCII digit is reported by position.
  size_t position = 0;
  for (size_t i = 0; i < nhs.size();) {
    const int32_t c = NextUtf8Character(nhs, &i);
    ++position;
    if (c < '0' || c > '9') {
      return "must contain digits only (character " + std::to_string(position) + " is not a digit)";
    }
  }
  auto check = NhsCheckDigit(nhs);
  if (!check) return "fails the Modulus 11 check (its first nine digits give check digit 10)";
  if (*check != nhs[9] - '0') {
    return "fails the Modulus 11 check (check digit should be " + std::to_string(*check) +
           ", got " + std::string(1, nhs[9]) + ")";
  }
  return {};
}

bool IsTestRangeNhsNumber(std::string_view nhs) {
  return nhs.size() == 10 && nhs.substr(0, 3) == "999";
}

std::string NormaliseNhsNumber(std::string_view input) {
  std::string out;
  out.reserve(input.size());
  for (char c : input) {
    if (c != ' ' && c != '-') out.push_back(c);
  }
  return out;
}

}  // namespace icr::broker
