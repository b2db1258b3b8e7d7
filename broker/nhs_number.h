// NHS number rules: 10 digits whose last is a Modulus 11 check digit.
//
// Weights 10..2 are applied to the first nine digits; the check digit is
// 11 - (sum mod 11), where 11 means 0 and 10 means the number is invalid.
// 999 000 0000 - 999 999 9999 is the test range used by tests and demos.
//
// Pure functions; safe from any thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace icr::broker {

// The check digit for the first nine digits of `nine_digits`, or nullopt if
// the result would be 10 (no valid NHS number starts with these digits).
// REQUIRES: nine_digits holds at least nine ASCII digits.
std::optional<int> NhsCheckDigit(std::string_view nine_digits);

// Empty if `nhs` is a valid NHS number; otherwise why not, e.g.
// "must be exactly 10 digits (got 9 characters)" or "fails the Modulus 11
// check (check digit should be 7, got 3)". Lengths and positions count
// characters (UTF-8 code points), not bytes; a non-ASCII digit (e.g. a
// full-width one) is named as such: "must contain ASCII digits 0-9 only
// (character 1 is U+FF19, a full-width digit; retype the number with 0-9)".
std::string NhsNumberProblem(std::string_view nhs);

inline bool IsValidNhsNumber(std::string_view nhs) { return NhsNumberProblem(nhs).empty(); }

// True for 999 000 0000 - 999 999 9999.
bool IsTestRangeNhsNumber(std::string_view nhs);

// Strips spaces and hyphens ("999 123 4560" -> "9991234560"); other
// characters are kept so that validation reports them.
std::string NormaliseNhsNumber(std::string_view input);

}  // namespace icr::broker
