#include "broker/nhs_number.h"

#include <gtest/gtest.h>

namespace icr::broker {
namespace {

TEST(NhsNumberTest, AcceptsKnownValidTestRangeNumbers) {
  for (const char* n : {"9990000018", "9990000026", "9990000034", "9990000042", "9990000069",
                        "9990000107", "9990000158"}) {
    EXPECT_TRUE(IsValidNhsNumber(n)) << n << ": " << NhsNumberProblem(n);
  }
}

TEST(NhsNumberTest, CheckDigitElevenMeansZero) {
  // 999000005: weighted sum is a multiple of 11, so 11 - 0 = 11 -> 0.
  EXPECT_EQ(NhsCheckDigit("999000005"), 0);
  EXPECT_TRUE(IsValidNhsNumber("9990000050"));
  EXPECT_FALSE(IsValidNhsNumber("9990000051"));
}

TEST(NhsNumberTest, CheckDigitTenMeansNoValidNumber) {
  EXPECT_EQ(NhsCheckDigit("999000000"), std::nullopt);
  for (char last = '0'; last <= '9'; ++last) {
    std::string n = std::string("999000000") + last;
    EXPECT_FALSE(IsValidNhsNumber(n)) << n;
    EXPECT_NE(NhsNumberProblem(n).find("check digit 10"), std::string::npos);
  }
}

TEST(NhsNumberTest, WrongCheckDigitSaysWhichItShouldBe) {
  EXPECT_EQ(NhsNumberProblem("9990000019"),
            "fails the Modulus 11 check (check digit should be 8, got 9)");
}

TEST(NhsNumberTest, RejectsWrongLengthAndNonDigits) {
  EXPECT_EQ(NhsNumberProblem(""), "is required (10 digits)");
  EXPECT_EQ(NhsNumberProblem("999000001"), "must be exactly 10 digits (got 9 characters)");
  EXPECT_EQ(NhsNumberProblem("99900000188"), "must be exactly 10 digits (got 11 characters)");
  EXPECT_EQ(NhsNumberProblem("99900000A8"),
            "must contain digits only (character 9 is not a digit)");
}

TEST(NhsNumberTest, CountsCharactersNotBytes) {
  // "é" is two bytes of UTF-8 but one character.
  EXPECT_EQ(NhsNumberProblem("999000001\xC3\xA9"),
            "must contain digits only (character 10 is not a digit)");
  EXPECT_EQ(NhsNumberProblem("99900\xC3\xA9"), "must be exactly 10 digits (got 6 characters)");
  // A byte that is not UTF-8 counts as one character.
  EXPECT_EQ(NhsNumberProblem("999000001\xFF"),
            "must contain digits only (character 10 is not a digit)");
}

TEST(NhsNumberTest, NamesNonAsciiDigits) {
  // Full-width digits (U+FF10..U+FF19), three bytes each: "９９９０００００１８".
  const std::string full_width =
      "\xEF\xBC\x99\xEF\xBC\x99\xEF\xBC\x99\xEF\xBC\x90\xEF\xBC\x90\xEF\xBC\x90\xEF\xBC\x90"
      "\xEF\xBC\x90\xEF\xBC\x91\xEF\xBC\x98";
  EXPECT_EQ(NhsNumberProblem(full_width),
            "must contain ASCII digits 0-9 only (character 1 is U+FF19, a full-width digit; "
            "retype the number with 0-9)");
  // One full-width digit among ASCII ones, in a number of the wrong length.
  EXPECT_EQ(NhsNumberProblem("99900\xEF\xBC\x90"),
            "must contain ASCII digits 0-9 only (character 6 is U+FF10, a full-width digit; "
            "retype the number with 0-9)");
  // Arabic-Indic digit nine (U+0669).
  EXPECT_EQ(NhsNumberProblem("\xD9\xA9"
                             "990000018"),
            "must contain ASCII digits 0-9 only (character 1 is U+0669, a non-ASCII digit; "
            "retype the number with 0-9)");
}

TEST(NhsNumberTest, EveryTenDigitNumberWithMatchingCheckDigitIsAccepted) {
  // Exhaustive over a block of the test range: accepted exactly when the
  // last digit equals the computed check digit.
  int accepted = 0;
  for (int stem = 999123000; stem < 999124000; ++stem) {
    std::string nine = std::to_string(stem);
    auto check = NhsCheckDigit(nine);
    for (char last = '0'; last <= '9'; ++last) {
      bool expect = check && *check == last - '0';
      EXPECT_EQ(IsValidNhsNumber(nine + last), expect) << nine << last;
      accepted += expect;
    }
  }
  EXPECT_GT(accepted, 850);  // about 10 in 11 stems have a check digit
  EXPECT_LT(accepted, 1000);
}

TEST(NhsNumberTest, NormaliseStripsSpacesAndHyphens) {
  EXPECT_EQ(NormaliseNhsNumber("999 000 0018"), "9990000018");
  EXPECT_EQ(NormaliseNhsNumber("999-000-0018"), "9990000018");
  EXPECT_TRUE(IsTestRangeNhsNumber("9990000018"));
}

}  // namespace
}  // namespace icr::broker
