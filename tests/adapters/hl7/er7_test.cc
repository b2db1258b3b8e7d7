// ER7 parser: separators from MSH-1/MSH-2, escapes, repetitions, segment
// terminators, limits and the inputs that broke other parsers.
#include "adapters/hl7/er7.h"

#include <gtest/gtest.h>

#include <string>

namespace icr::adapters::hl7 {
namespace {

Er7Message MustParse(std::string_view text, const Er7Limits& limits = {}) {
  Er7Message m;
  Er7Error e = ParseEr7(text, limits, &m);
  EXPECT_TRUE(e.ok()) << e.ToString();
  return m;
}

Er7Error MustFail(std::string_view text, const Er7Limits& limits = {}) {
  Er7Message m;
  Er7Error e = ParseEr7(text, limits, &m);
  EXPECT_FALSE(e.ok()) << "parsed: " << text;
  return e;
}

const char* kBasic =
    "MSH|^~\\&|UHCW-EPR|RKB|ICR|QWU|20250610093000||ADT^A01^ADT_A01|MSG1|P|2.4\r"
    "EVN|A01|20250610093000\r"
    "PID|1||9990000018^^^NHS^NH~RKB123^^^RKB^MR||JONES^Margaret^Ann\r"
    "PV1|1|I|Ward 33^Bay 2^Bed 4^RKB01\r";

TEST(Er7Test, MshNumberingStartsWithTheSeparator) {
  Er7Message m = MustParse(kBasic);
  EXPECT_EQ(m.Get("MSH", 1), "|");
  EXPECT_EQ(m.Get("MSH", 2), "^~\\&");
  EXPECT_EQ(m.Get("MSH", 3), "UHCW-EPR");
  EXPECT_EQ(m.Get("MSH", 4), "RKB");
  EXPECT_EQ(m.Get("MSH", 7), "20250610093000");
  EXPECT_EQ(m.Get("MSH", 9, 1, 1), "ADT");
  EXPECT_EQ(m.Get("MSH", 9, 1, 2), "A01");
  EXPECT_EQ(m.Get("MSH", 9, 1, 3), "ADT_A01");
  EXPECT_EQ(m.Get("MSH", 10), "MSG1");
  EXPECT_EQ(m.Get("MSH", 12), "2.4");
  EXPECT_EQ(m.segment_count(), 4u);
}

TEST(Er7Test, RepetitionsComponentsSubcomponents) {
  Er7Message m = MustParse(std::string(kBasic) + "ZXX|a&b&c^d~e\r");
  EXPECT_EQ(m.Get("PID", 3, 1, 1), "9990000018");
  EXPECT_EQ(m.Get("PID", 3, 1, 4), "NHS");
  EXPECT_EQ(m.Get("PID", 3, 1, 5), "NH");
  EXPECT_EQ(m.Get("PID", 3, 2, 1), "RKB123");
  EXPECT_EQ(m.Get("PID", 3, 2, 5), "MR");
  EXPECT_EQ(m.Get("PID", 3, 3, 1), "");
  EXPECT_EQ(m.RepetitionCount(m.FindSegment("PID"), 3), 2);
  EXPECT_EQ(m.Get("PID", 5, 1, 2), "Margaret");
  EXPECT_EQ(m.Get("PID", 99), "");
  EXPECT_EQ(m.Get("ZXX", 1, 1, 1, 2), "b");
  EXPECT_EQ(m.Get("ZXX", 1, 1, 1, 3), "c");
  EXPECT_EQ(m.Get("ZXX", 1, 1, 2), "d");
  EXPECT_EQ(m.Get("ZXX", 1, 2, 1), "e");
  EXPECT_EQ(m.Get("NOPE", 1), "");
  EXPECT_EQ(m.Get("PID", 0), "");
  EXPECT_EQ(m.Get("PID", 3, 0), "");
}

TEST(Er7Test, NonStandardSeparatorsFromMsh1AndMsh2) {
  Er7Message m = MustParse(
      "MSH$~#!&$APP$RKB$$$20250101$$ADT~A01$X1$P$2.4\r"
      "PID$1$$9990000018~~~NHS~NH#9990000026~~~NHS~NH$$SMITH~John!X41!Jr\r");
  EXPECT_EQ(m.Get("MSH", 1), "$");
  EXPECT_EQ(m.Get("MSH", 2), "~#!&");
  EXPECT_EQ(m.Get("MSH", 9, 1, 2), "A01");
  EXPECT_EQ(m.Get("PID", 3, 2, 1), "9990000026");
  EXPECT_EQ(m.Get("PID", 5, 1, 1), "SMITH");
  EXPECT_EQ(m.Get("PID", 5, 1, 2), "JohnAJr");  // !X41! is 'A' with '!' as escape
  EXPECT_EQ(m.delimiters().escape, '!');
}

TEST(Er7Test, TruncationCharacterOfV27IsTolerated) {
  Er7Message m = MustParse("MSH|^~\\&#|APP|RKB|||20250101||ADT^A01|X1|P|2.7\rPID|1||A#B\r");
  EXPECT_EQ(m.Get("MSH", 2), "^~\\&#");
  EXPECT_EQ(m.Get("MSH", 3), "APP");
  EXPECT_EQ(m.Get("PID", 3), "A#B");
}

TEST(Er7Test, EscapeSequences) {
  Er7Message m = MustParse(
      "MSH|^~\\&|A|B|||1||ADT^A01|1|P|2.4\r"
      "NTE|1|\\F\\\\S\\\\T\\\\R\\\\E\\|a\\X0D\\b\\X0A0D\\c|x\\H\\y\\N\\z\\.br\\w|\\X414243\\|"
      "\\C2842\\|\"\"\r");
  EXPECT_EQ(m.Get("NTE", 2), "|^&~\\");
  EXPECT_EQ(m.Get("NTE", 3), "a\rb\n\rc");
  EXPECT_EQ(m.Get("NTE", 4), "xyzw");
  EXPECT_EQ(m.Get("NTE", 5), "ABC");
  EXPECT_EQ(m.Get("NTE", 7), "");  // "" is HL7's explicit null
}

TEST(Er7Test, BadEscapesAreErrorsNamingTheField) {
  const std::string head = "MSH|^~\\&|A|B|||1||ADT^A01|1|P|2.4\r";
  Er7Error e = MustFail(head + "PID|1||abc\\X0\\\r");
  EXPECT_EQ(e.segment, "PID");
  EXPECT_EQ(e.field, 3);
  EXPECT_NE(e.ToString().find("PID-3"), std::string::npos) << e.ToString();
  EXPECT_NE(e.problem.find("hex"), std::string::npos);

  e = MustFail(head + "PID|1||abc\\F\r");
  EXPECT_NE(e.problem.find("unterminated"), std::string::npos) << e.problem;
  e = MustFail(head + "PID|1||abc\\F^def\\\r");
  EXPECT_NE(e.problem.find("unterminated"), std::string::npos) << e.problem;
  e = MustFail(head + "PID|1||\\Q\\\r");
  EXPECT_NE(e.problem.find("unknown escape"), std::string::npos) << e.problem;
  e = MustFail(head + "PID|1||\\\\\r");
  EXPECT_NE(e.problem.find("empty escape"), std::string::npos) << e.problem;
  e = MustFail(head + "PID|1||\\XZZ\\\r");
  EXPECT_EQ(e.kind, Er7ErrorKind::kDataType);
}

TEST(Er7Test, SegmentTerminatorsCrLfAndCrLf) {
  const std::string cr = kBasic;
  std::string lf = cr, crlf;
  for (char& c : lf) {
    if (c == '\r') c = '\n';
  }
  for (char c : cr) {
    crlf += c;
    if (c == '\r') crlf += '\n';
  }
  for (const std::string& text : {cr, lf, crlf, cr + "\r\r\n\n"}) {
    Er7Message m = MustParse(text);
    EXPECT_EQ(m.segment_count(), 4u);
    EXPECT_EQ(m.Get("PV1", 3, 1, 4), "RKB01");
    EXPECT_EQ(m.Get("MSH", 12), "2.4");
  }
  // No terminator after the last segment.
  Er7Message m = MustParse(cr.substr(0, cr.size() - 1));
  EXPECT_EQ(m.Get("PV1", 3, 1, 4), "RKB01");
}

TEST(Er7Test, LeadingBomAndBlankLinesAreSkipped) {
  Er7Message m = MustParse(std::string("\xEF\xBB\xBF\r\n") + kBasic);
  EXPECT_EQ(m.Get("MSH", 3), "UHCW-EPR");
}

TEST(Er7Test, TheInputsThatBrokeNhapi) {
  Er7Error e = MustFail("");
  EXPECT_NE(e.problem.find("empty"), std::string::npos);
  e = MustFail("MSHH0\r");
  EXPECT_EQ(e.segment, "MSH");
  EXPECT_EQ(e.field, 1);
  e = MustFail("MSH|^|||||||^A|||2.2\r^AA");
  EXPECT_EQ(e.field, 2);  // one encoding character is not enough
  e = MustFail("MSH");
  e = MustFail("MSH|");
}

TEST(Er7Test, MshAloneIsEnough) {
  Er7Message m = MustParse("MSH|^~\\&");
  EXPECT_EQ(m.Get("MSH", 2), "^~\\&");
  EXPECT_EQ(m.Get("MSH", 3), "");
}

TEST(Er7Test, XmlIsRefusedClearly) {
  Er7Error e = MustFail("<?xml version=\"1.0\"?><ADT_A01 xmlns=\"urn:hl7-org:v2xml\"/>");
  EXPECT_NE(e.problem.find("XML"), std::string::npos);
  e = MustFail("  \r\n<ADT_A01/>");
  EXPECT_NE(e.problem.find("XML"), std::string::npos);
}

TEST(Er7Test, StructuralErrors) {
  const std::string head = "MSH|^~\\&|A|B|||1||ADT^A01|1|P|2.4\r";
  Er7Error e = MustFail("PID|1\r" + head);
  EXPECT_NE(e.problem.find("must start with an MSH"), std::string::npos);
  e = MustFail(head + head);
  EXPECT_EQ(e.problem,
            "a second MSH segment starts a second message, but an MLLP frame carries one "
            "message: send each message in its own frame");
  EXPECT_EQ(e.segment_index, 2);
  EXPECT_EQ(e.occurrence, 2);  // the second MSH, not the first
  // A field problem in the second segment of a name is in its second occurrence.
  e = MustFail(head + "NTE|1|ok\rPID|1\rNTE|2|\\Q\\\r");
  EXPECT_EQ(e.segment, "NTE");
  EXPECT_EQ(e.segment_index, 4);
  EXPECT_EQ(e.occurrence, 2);
  EXPECT_EQ(e.field, 2);
  e = MustFail(head + "pid|1\r");
  EXPECT_NE(e.problem.find("segment name"), std::string::npos);
  e = MustFail(head + "PI\r");
  EXPECT_EQ(e.segment_index, 2);
  e = MustFail(head + "PIDX|1\r");
  EXPECT_NE(e.problem.find("followed by the field separator"), std::string::npos);
  e = MustFail("BHS|^~\\&|A\r" + head);
  EXPECT_NE(e.problem.find("batch"), std::string::npos);
  e = MustFail(head + "BTS|1\r");
  EXPECT_NE(e.problem.find("batch"), std::string::npos);
  e = MustFail("MSH|^~^&|A\r");
  EXPECT_NE(e.problem.find("used twice"), std::string::npos);
  e = MustFail("MSH|^~\\|A\r");
  EXPECT_EQ(e.field, 2);
  e = MustFail("MSH|^~\\&x|A\r");
  EXPECT_EQ(e.field, 2);
  e = MustFail("MSH ^~\\&|A\r");
  EXPECT_EQ(e.field, 1);
}

TEST(Er7Test, ErrorKeepsTheMshForTheAck) {
  Er7Message m;
  Er7Error e = ParseEr7("MSH|^~\\&|APP|RKB|||1||ADT^A01|CTRL9|P|2.4\rPID|1||\\Q\\\r", {}, &m);
  ASSERT_FALSE(e.ok());
  ASSERT_TRUE(m.has_msh());
  EXPECT_EQ(m.Get("MSH", 10), "CTRL9");
}

TEST(Er7Test, Limits) {
  Er7Limits limits;
  limits.max_message_bytes = 100;
  Er7Error e = MustFail(std::string(kBasic) + std::string(200, 'x'), limits);
  EXPECT_NE(e.problem.find("exceeds the limit"), std::string::npos);

  limits = {};
  limits.max_segments = 3;
  e = MustFail(kBasic, limits);
  EXPECT_NE(e.problem.find("more than 3 segments"), std::string::npos);

  limits = {};
  limits.max_fields_per_segment = 5;
  e = MustFail(kBasic, limits);
  EXPECT_NE(e.problem.find("more than 5 fields"), std::string::npos);
  EXPECT_EQ(e.segment, "MSH");

  limits = {};
  e = MustFail("MSH|^~\\&|A\rPID|1||" + std::string(150, '~') + "\r", limits);
  EXPECT_NE(e.problem.find("repetitions"), std::string::npos);
  EXPECT_EQ(e.field, 3);

  // A megabyte message of one long field parses (the default limit).
  std::string big = "MSH|^~\\&|A\rNTE|1|" + std::string(1000000, 'a') + "\r";
  Er7Message m = MustParse(big);
  EXPECT_EQ(m.Get("NTE", 2).size(), 1000000u);
}

TEST(Er7Test, EscapeRoundTrip) {
  Er7Delimiters d;
  const std::string text = "a|b^c~d\\e&f\rg\nh\x01i";
  std::string escaped = Er7Escape(text, d);
  EXPECT_EQ(escaped.find('|'), std::string::npos);
  Er7Message m = MustParse("MSH|^~\\&|A\rNTE|1|" + escaped + "\r");
  EXPECT_EQ(m.Get("NTE", 2), "a|b^c~d\\e&f\rg\nh i");
}

TEST(Er7Test, Timestamps) {
  int64_t s = 0;
  int32_t n = 0;
  EXPECT_EQ(ParseHl7Timestamp("20250610093000+0100", true, &s, &n), "");
  EXPECT_EQ(s, 1749544200);  // 2025-06-10T08:30:00Z
  EXPECT_EQ(ParseHl7Timestamp("20250610093000", false, &s, &n), "");
  EXPECT_EQ(s, 1749547800);  // read as UTC
  EXPECT_EQ(ParseHl7Timestamp("20250610093000", true, &s, &n), "");
  EXPECT_EQ(s, 1749544200);  // read as BST
  EXPECT_EQ(ParseHl7Timestamp("20250115093000", true, &s, &n), "");
  EXPECT_EQ(s, 1736933400);  // January: GMT
  EXPECT_EQ(ParseHl7Timestamp("20250610093000.1234-0500", true, &s, &n), "");
  EXPECT_EQ(s, 1749565800);
  EXPECT_EQ(n, 123400000);
  EXPECT_EQ(ParseHl7Timestamp("2025", true, &s, &n), "");
  EXPECT_EQ(ParseHl7Timestamp("202506", true, &s, &n), "");
  EXPECT_EQ(ParseHl7Timestamp("20250610", true, &s, &n), "");
  EXPECT_EQ(ParseHl7Timestamp("202506100930", true, &s, &n), "");
  // BST starts 2025-03-30 01:00 UTC and ends 2025-10-26 01:00 UTC.
  EXPECT_EQ(ParseHl7Timestamp("20250330005959", true, &s, &n), "");
  EXPECT_EQ(s, 1743296399);  // GMT
  EXPECT_EQ(ParseHl7Timestamp("20250330020000", true, &s, &n), "");
  EXPECT_EQ(s, 1743296400);  // BST 02:00 = 01:00 UTC
  EXPECT_EQ(ParseHl7Timestamp("20251026013000", true, &s, &n), "");
  EXPECT_EQ(s, 1761438600);  // the repeated hour: the BST reading, 00:30 UTC

  for (const char* bad : {"", "2025061", "20251310", "20250230", "20250610246000",
                          "20250610093000+01", "20250610093000+1", "2025-06-10",
                          "20250610093000.", "20250610093000.12345", "202506100930.5",
                          "20250610093000Z", "0000", "20250610093000+2500"}) {
    EXPECT_NE(ParseHl7Timestamp(bad, true, &s, &n), "") << bad;
  }
}

TEST(Er7Test, Dates) {
  int y, m, d;
  EXPECT_EQ(ParseHl7Date("19400312", &y, &m, &d), "");
  EXPECT_EQ(y, 1940);
  EXPECT_EQ(m, 3);
  EXPECT_EQ(d, 12);
  EXPECT_EQ(ParseHl7Date("194003120000", &y, &m, &d), "");
  EXPECT_NE(ParseHl7Date("1940", &y, &m, &d), "");
  EXPECT_NE(ParseHl7Date("19400231", &y, &m, &d), "");
  EXPECT_NE(ParseHl7Date("19400312xx", &y, &m, &d), "");
}

}  // namespace
}  // namespace icr::adapters::hl7
