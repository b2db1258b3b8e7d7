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
