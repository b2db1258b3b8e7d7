#include "broker/nhs_number.h"

namespace icr::broker {

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
  if (nhs.size() != 10) {
    return "must be exactly 10 digits (got " + std::to_string(nhs.size()) + " characters)";
  }
  for (size_t i = 0; i < nhs.size(); ++i) {
    if (nhs[i] < '0' || nhs[i] > '9') {
      return "must contain digits only (character " + std::to_string(i + 1) + " is not a digit)";
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
