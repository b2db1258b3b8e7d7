// Tests of the store's key encodings (store/keys.h).
#include "store/keys.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace icr::store::keys {
namespace {

const std::vector<uint64_t>& SamplePositions() {
  static const std::vector<uint64_t> kPositions = {0,
                                                   1,
                                                   2,
                                                   255,
                                                   256,
                                                   257,
                                                   65535,
                                                   65536,
                                                   1u << 24,
                                                   (1ull << 32) - 1,
                                                   1ull << 32,
                                                   1ull << 56,
                                                   (1ull << 63) + 12345,
                                                   std::numeric_limits<uint64_t>::max() - 1,
                                                   std::numeric_limits<uint64_t>::max()};
  return kPositions;
}

TEST(KeysTest, PositionRoundTrips) {
  for (uint64_t p : SamplePositions()) {
    const std::string encoded = EncodePosition(p);
    ASSERT_EQ(encoded.size(), kPositionLength);
    uint64_t decoded = 0;
    ASSERT_TRUE(DecodePosition(encoded, &decoded));
    EXPECT_EQ(decoded, p);
  }
}

TEST(KeysTest, PositionIsBigEndian) {
  EXPECT_EQ(EncodePosition(1), std::string("\0\0\0\0\0\0\0\x01", 8));
  EXPECT_EQ(EncodePosition(0x0102030405060708ull),
            std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8));
}

TEST(KeysTest, DecodeRejectsWrongLength) {
  uint64_t p = 7;
  EXPECT_FALSE(DecodePosition("", &p));
  EXPECT_FALSE(DecodePosition(std::string(7, '\0'), &p));
  EXPECT_FALSE(DecodePosition(std::string(9, '\0'), &p));
  EXPECT_EQ(p, 7u);
}

TEST(KeysTest, BytewiseOrderIsNumericOrder) {
  std::vector<uint64_t> positions = SamplePositions();
  std::vector<std::string> encoded;
  for (uint64_t p : positions) encoded.push_back(EncodePosition(p));
  // Shuffle deterministically, sort bytewise, decode: must be numerically sorted.
  std::reverse(encoded.begin(), encoded.end());
  std::rotate(encoded.begin(), encoded.begin() + 5, encoded.end());
  std::sort(encoded.begin(), encoded.end());  // std::string compares as unsigned bytes
  std::vector<uint64_t> decoded;
  for (const std::string& e : encoded) {
    uint64_t p = 0;
    ASSERT_TRUE(DecodePosition(e, &p));
    decoded.push_back(p);
  }
  std::sort(positions.begin(), positions.end());
  EXPECT_EQ(decoded, positions);

  for (uint64_t p = 0; p < 70000; ++p) {
    ASSERT_LT(EncodePosition(p), EncodePosition(p + 1)) << p;
  }
}

TEST(KeysTest, PatientKeyRoundTripAndPrefix) {
  const std::string nhs = "9990000026";
  const std::string key = PatientKey(nhs, 300);
  ASSERT_EQ(key.size(), kPatientKeyLength);
  EXPECT_EQ(key.substr(0, kNhsNumberLength), nhs);  // the prefix is the NHS number
  EXPECT_EQ(key.substr(kNhsNumberLength), EncodePosition(300));
  std::string_view parsed_nhs;
  uint64_t position = 0;
  ASSERT_TRUE(ParsePatientKey(key, &parsed_nhs, &position));
  EXPECT_EQ(parsed_nhs, nhs);
  EXPECT_EQ(position, 300u);
  EXPECT_FALSE(ParsePatientKey(key.substr(1), &parsed_nhs, &position));
}

TEST(KeysTest, PatientKeysOrderByPersonThenPosition) {
  const std::string a = "9990000026";
  const std::string b = "9990000034";
  EXPECT_LT(PatientKey(a, 1), PatientKey(a, 2));
  EXPECT_LT(PatientKey(a, 255), PatientKey(a, 256));
  EXPECT_LT(PatientKey(a, std::numeric_limits<uint64_t>::max()), PatientKey(b, 0));
}

TEST(KeysTest, IdempotencyKeySeparatesFields) {
  const std::string k = IdempotencyKey("uhcw-epr", "msg-1");
  EXPECT_EQ(k, std::string("uhcw-epr\0msg-1", 14));
  // "ab" + "c" and "a" + "bc" must not collide.
  EXPECT_NE(IdempotencyKey("ab", "c"), IdempotencyKey("a", "bc"));
}

TEST(KeysTest, ParkedKeyRoundTripAndPrefix) {
  const std::string key = ParkedKey("ward-feed", 513);
  EXPECT_EQ(key.rfind(ParkedPrefix("ward-feed"), 0), 0u);
  std::string_view name;
  uint64_t position = 0;
  ASSERT_TRUE(ParseParkedKey(key, &name, &position));
  EXPECT_EQ(name, "ward-feed");
  EXPECT_EQ(position, 513u);

  // A name that is a prefix of another does not share its key prefix.
  EXPECT_NE(ParkedKey("ward-feed-2", 1).rfind(ParkedPrefix("ward-feed"), 0), 0u);
  // Within one name, parked keys order by position.
  EXPECT_LT(ParkedKey("s", 255), ParkedKey("s", 256));

  EXPECT_FALSE(ParseParkedKey("short", &name, &position));
  EXPECT_FALSE(ParseParkedKey("no-separator-here", &name, &position));  // no '\0' before BE64
  ASSERT_TRUE(ParseParkedKey(ParkedKey("", 9), &name, &position));
  EXPECT_EQ(name, "");
  EXPECT_EQ(position, 9u);
}

}  // namespace
}  // namespace icr::store::keys
