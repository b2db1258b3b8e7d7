// The CSV reader (RFC 4180, limits, recovery after a bad record), the writer,
// UTF-8 checking, date/time formats and SHA-256.
#include "adapters/csv/csv_reader.h"

#include <gtest/gtest.h>

#include <sstream>
#include <streambuf>

#include "adapters/csv/csv_formats.h"
#include "adapters/csv/sha256.h"

namespace icr::adapters::csv {
namespace {

struct Item {
  bool error = false;
  std::vector<std::string> fields;
  std::string message;
  uint64_t row = 0;
  uint64_t line = 0;
  std::string raw;
};

std::vector<Item> ReadAll(const std::string& text, CsvLimits limits = {},
                          std::vector<std::string> names = {}) {
  std::istringstream in(text);
  CsvReader reader(&in, limits);
  reader.SetColumnNames(names);
  std::vector<Item> out;
  CsvRecord record;
  std::string error;
  while (true) {
    const CsvReader::Result r = reader.Next(&record, &error);
    if (r == CsvReader::Result::kEnd) break;
    Item item;
    item.error = r == CsvReader::Result::kError;
    item.fields = record.fields;
    item.message = error;
    item.row = record.row;
    item.line = record.line;
    item.raw = record.raw;
    out.push_back(std::move(item));
    if (out.size() > 10000) break;  // a reader that never ends fails below
  }
  return out;
}

using Fields = std::vector<std::string>;

TEST(CsvReader, SimpleRecordsAndRowNumbers) {
  auto items = ReadAll("a,b,c\n1,2,3\n4,5,6\n");
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[0].fields, (Fields{"a", "b", "c"}));
  EXPECT_EQ(items[2].fields, (Fields{"4", "5", "6"}));
  EXPECT_EQ(items[0].row, 1u);
  EXPECT_EQ(items[2].row, 3u);
  EXPECT_EQ(items[2].raw, "4,5,6");
}

TEST(CsvReader, QuotedFieldsHoldDelimitersQuotesAndLineBreaks) {
  auto items = ReadAll(
      "h1,h2,h3\r\n\"Allied Care, Coventry\",\"say \"\"hi\"\"\",\"two\r\nlines\"\r\n"
      "x,\"\",\"a\nb\"\r\nlast,row,here\r\n");
  ASSERT_EQ(items.size(), 4u);
  EXPECT_EQ(items[1].fields, (Fields{"Allied Care, Coventry", "say \"hi\"", "two\r\nlines"}));
  EXPECT_EQ(items[2].fields, (Fields{"x", "", "a\nb"}));
  // Rows count records; lines count physical lines.
  EXPECT_EQ(items[1].row, 2u);
  EXPECT_EQ(items[1].line, 2u);
  EXPECT_EQ(items[2].row, 3u);
  EXPECT_EQ(items[2].line, 4u);
  EXPECT_EQ(items[3].row, 4u);
  EXPECT_EQ(items[3].line, 6u);
  EXPECT_EQ(items[2].raw, "x,\"\",\"a\nb\"");
}

TEST(CsvReader, LineEndingsCrlfLfAndCr) {
  for (const std::string nl : {"\r\n", "\n", "\r"}) {
    auto items = ReadAll("a,b" + nl + "1,2" + nl + "3,4");
    ASSERT_EQ(items.size(), 3u) << "line ending " << static_cast<int>(nl.back());
    EXPECT_EQ(items[1].fields, (Fields{"1", "2"}));
    EXPECT_EQ(items[2].fields, (Fields{"3", "4"}));  // no final line ending
    EXPECT_EQ(items[2].line, 3u);
  }
}

TEST(CsvReader, ByteOrderMarkIsSkippedOnlyAtTheStart) {
  auto items = ReadAll("\xEF\xBB\xBFNHS Number,Name\n\xEF\xBB\xBFx,y\n");
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].fields[0], "NHS Number");
  EXPECT_EQ(items[1].fields[0], "\xEF\xBB\xBFx");
}

TEST(CsvReader, BlankLinesAreSkippedButCounted) {
  auto items = ReadAll("a,b\n\n1,2\r\n\r\n\n3,4\n\n");
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[1].row, 3u);
  EXPECT_EQ(items[2].row, 6u);
  EXPECT_EQ(items[2].fields, (Fields{"3", "4"}));
}

TEST(CsvReader, EmptyFieldsAndTrailingDelimiter) {
  auto items = ReadAll("a,,c,\n,,,\n\"\"\n");
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[0].fields, (Fields{"a", "", "c", ""}));
  EXPECT_EQ(items[1].fields, (Fields{"", "", "", ""}));
  EXPECT_EQ(items[2].fields, (Fields{""}));
}

TEST(CsvReader, EmptyInput) {
  EXPECT_TRUE(ReadAll("").empty());
  EXPECT_TRUE(ReadAll("\xEF\xBB\xBF").empty());
}

TEST(CsvReader, OtherDelimiters) {
  CsvLimits semi;
  semi.delimiter = ';';
  auto items = ReadAll("a;b\n\"x;y\";z,w\n", semi);
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[1].fields, (Fields{"x;y", "z,w"}));
  CsvLimits tab;
  tab.delimiter = '\t';
  items = ReadAll("a\tb\n1,5\t2\n", tab);
  EXPECT_EQ(items[1].fields, (Fields{"1,5", "2"}));
}

TEST(CsvReader, StrayQuoteNamesRowAndColumnAndReadingGoesOn) {
  auto items = ReadAll("id,name,town\n1,Ann,Rugby\n2,Bo\"b,Coventry\n3,Cy,Nuneaton\n", {},
                       {"id", "name", "town"});
  ASSERT_EQ(items.size(), 4u);
  EXPECT_TRUE(items[2].error);
  EXPECT_EQ(items[2].row, 3u);
  EXPECT_NE(items[2].message.find("row 3, column 'name': unexpected '\"' inside an unquoted field"),
            std::string::npos)
      << items[2].message;
  EXPECT_EQ(items[2].raw, "2,Bo\"b,Coventry");
  EXPECT_TRUE(items[2].fields.empty());
  EXPECT_FALSE(items[3].error);
  EXPECT_EQ(items[3].fields, (Fields{"3", "Cy", "Nuneaton"}));
}

TEST(CsvReader, TextAfterClosingQuote) {
  auto items = ReadAll("a,b\n\"x\"y,2\n3,4\n");
  ASSERT_EQ(items.size(), 3u);
  EXPECT_TRUE(items[1].error);
  EXPECT_NE(items[1].message.find("row 2, column 1: unexpected 'y' after the closing quote"),
            std::string::npos)
      << items[1].message;
  EXPECT_EQ(items[2].fields, (Fields{"3", "4"}));
}

TEST(CsvReader, SkippingABadRecordHonoursQuotedLineBreaksAfterIt) {
  // The bad record's later field holds a quoted line break: the record ends
  // after it, not at the first physical line end.
  auto items = ReadAll("a,b,c\n1x\"y,\"two\nlines\",z\nnext,row,ok\n");
  ASSERT_EQ(items.size(), 3u);
  EXPECT_TRUE(items[1].error);
  EXPECT_EQ(items[2].fields, (Fields{"next", "row", "ok"}));
  EXPECT_EQ(items[2].row, 3u);
  EXPECT_EQ(items[2].line, 4u);
}

TEST(CsvReader, UnclosedQuoteSaysWhereItOpened) {
  auto items = ReadAll("a,b\n1,2\n3,\"open\nmore\nstill\n");
  ASSERT_EQ(items.size(), 3u);
  EXPECT_TRUE(items[2].error);
  EXPECT_EQ(items[2].message,
            "row 3, column 2: quoted field not closed (the quote opened on line 3 runs to the end "
            "of the input)");
}

TEST(CsvReader, FieldLimit) {
  CsvLimits limits;
  limits.max_field_bytes = 8;
  auto items = ReadAll("a,b\n12345678,\"abcdefgh\"\n123456789,x\nok,\"abcdefghi\"\nfine,1\n",
                       limits, {"a", "b"});
  ASSERT_EQ(items.size(), 5u);
  EXPECT_FALSE(items[1].error);  // exactly at the limit
  EXPECT_TRUE(items[2].error);
  EXPECT_EQ(items[2].message, "row 3, column 'a': field is longer than the limit of 8 bytes");
  EXPECT_TRUE(items[3].error);
  EXPECT_EQ(items[3].message, "row 4, column 'b': field is longer than the limit of 8 bytes");
  EXPECT_EQ(items[4].fields, (Fields{"fine", "1"}));
}

TEST(CsvReader, DefaultFieldLimitIs64KiB) {
  const std::string at(64 * 1024, 'x');
  auto items = ReadAll("a\n" + at + "\n" + at + "y\nz\n");
  ASSERT_EQ(items.size(), 4u);
  EXPECT_FALSE(items[1].error);
  EXPECT_TRUE(items[2].error);
  EXPECT_EQ(items[2].message, "row 3, column 1: field is longer than the limit of 65,536 bytes");
  EXPECT_LE(items[2].raw.size(), 64u * 1024);
  EXPECT_EQ(items[3].fields, (Fields{"z"}));
}

TEST(CsvReader, ColumnLimit) {
  std::string at_limit, over;
  for (int i = 0; i < 512; ++i) at_limit += (i ? "," : "") + std::to_string(i);
  over = at_limit + ",\"5\n13\"";
  auto items = ReadAll(at_limit + "\n" + over + "\nafter\n");
  ASSERT_EQ(items.size(), 3u);
  EXPECT_FALSE(items[0].error);
  EXPECT_EQ(items[0].fields.size(), 512u);
  EXPECT_TRUE(items[1].error);
  EXPECT_EQ(items[1].message, "row 2: more than 512 fields (the limit)");
  EXPECT_EQ(items[2].fields, (Fields{"after"}));
}

TEST(CsvReader, RecordLimit) {
  CsvLimits limits;
  limits.max_record_bytes = 20;
  auto items = ReadAll("a,b\n12345678901234567890\n123456789012345678901\nok,1\n", limits);
  ASSERT_EQ(items.size(), 4u);
  EXPECT_FALSE(items[1].error);
  EXPECT_TRUE(items[2].error);
  EXPECT_EQ(items[2].message, "row 3, column 1: record is longer than the limit of 20 bytes");
  EXPECT_EQ(items[3].fields, (Fields{"ok", "1"}));
}

TEST(CsvReader, DefaultRecordLimitIs1MiB) {
  std::string row;
  while (row.size() <= (size_t{1} << 20)) row += std::string(60000, 'x') + ",";
  auto items = ReadAll("h\n" + row + "\nnext\n");
  ASSERT_EQ(items.size(), 3u);
  EXPECT_TRUE(items[1].error);
  EXPECT_NE(items[1].message.find("record is longer than the limit of 1,048,576 bytes"),
            std::string::npos);
  EXPECT_EQ(items[2].fields, (Fields{"next"}));
}

// An endless-looking input produced on demand: the reader must stream it.
class GeneratedRows : public std::streambuf {
 public:
  explicit GeneratedRows(int rows) : rows_(rows) {}

 protected:
  int_type underflow() override {
    if (next_ > rows_) return traits_type::eof();
    line_ = next_ == 0 ? "id,nhs,note\r\n"
                       : std::to_string(next_) + ",9990000018,\"note, with comma\"\r\n";
    ++next_;
    setg(line_.data(), line_.data(), line_.data() + line_.size());
    return traits_type::to_int_type(line_[0]);
  }

 private:
  int rows_;
  int next_ = 0;
  std::string line_;
};

TEST(CsvReader, StreamsLargeInputs) {
  GeneratedRows gen(200000);
  std::istream in(&gen);
  CsvReader reader(&in);
  CsvRecord record;
  std::string error;
  uint64_t n = 0;
  while (reader.Next(&record, &error) == CsvReader::Result::kRecord) ++n;
  EXPECT_EQ(n, 200001u);
  EXPECT_EQ(record.fields.size(), 0u);
  EXPECT_GT(reader.bytes_consumed(), 200000u * 30);
  EXPECT_FALSE(reader.stream_failed());
}

TEST(CsvReader, BytesConsumedCountsTheWholeInput) {
  const std::string text =
      "\xEF\xBB\xBF"
      "a,b\r\n1,2\r\n";
  std::istringstream in(text);
  CsvReader reader(&in);
  CsvRecord record;
  std::string error;
  while (reader.Next(&record, &error) != CsvReader::Result::kEnd) {
  }
  EXPECT_EQ(reader.bytes_consumed(), text.size());
}

TEST(CsvWriter, QuotesOnlyWhatNeedsIt) {
  EXPECT_EQ(FormatCsvRecord({"a", "b c", ""}), "a,b c,\r\n");
  EXPECT_EQ(FormatCsvRecord({"x,y", "say \"hi\"", "two\nlines", " pad"}),
            "\"x,y\",\"say \"\"hi\"\"\",\"two\nlines\",\" pad\"\r\n");
  EXPECT_EQ(FormatCsvRecord({"a;b", "c,d"}, ';'), "\"a;b\";c,d\r\n");
}

TEST(CsvWriter, RoundTrip) {
  const Fields fields = {"plain", "with, comma", "\"quoted\"", "multi\r\nline", "", "  spaced  "};
  auto items = ReadAll(FormatCsvRecord(fields) + FormatCsvRecord(fields));
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].fields, fields);
  EXPECT_EQ(items[1].fields, fields);
}

// Found by the long fuzz run: a field starting with a byte-order mark
// (U+FEFF, here mid-file in the input) written first in a file lost its mark
// on reading back, taken for the file's own.
TEST(CsvWriter, AFieldStartingWithAByteOrderMarkKeepsIt) {
  const Fields fields = {"\xEF\xBB\xBF" "0000018", "PR-1"};
  EXPECT_EQ(FormatCsvRecord(fields), "\"\xEF\xBB\xBF" "0000018\",PR-1\r\n");
  auto items = ReadAll(FormatCsvRecord(fields));
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].fields, fields);
}

TEST(Utf8, Validity) {
  EXPECT_TRUE(IsValidUtf8("plain"));
  EXPECT_TRUE(IsValidUtf8("Se\xC3\xA1n \xE2\x82\xAC \xF0\x9F\x98\x80"));  // á € emoji
  EXPECT_FALSE(IsValidUtf8("caf\xE9"));                                   // Windows-1252 é
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));                                  // overlong
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));                              // surrogate
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));                          // above U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xE2\x82"));                                  // truncated
}

// ---------------------------------------------------------------------------
// Formats
// ---------------------------------------------------------------------------

TEST(Formats, UkDates) {
  CivilTime t;
  ASSERT_TRUE(ParseWithFormat("01/03/2026", "%d/%m/%Y", &t));
  EXPECT_EQ(t.year, 2026);
  EXPECT_EQ(t.month, 3);
  EXPECT_EQ(t.day, 1);
  ASSERT_TRUE(ParseWithFormat("1/3/2026", "%d/%m/%Y", &t));
  EXPECT_EQ(t.day, 1);
  EXPECT_FALSE(ParseWithFormat("31/02/2026", "%d/%m/%Y", &t));
  EXPECT_TRUE(ParseWithFormat("29/02/2024", "%d/%m/%Y", &t));
  EXPECT_FALSE(ParseWithFormat("29/02/2025", "%d/%m/%Y", &t));
  EXPECT_FALSE(ParseWithFormat("13/13/2026", "%d/%m/%Y", &t));
  EXPECT_FALSE(ParseWithFormat("01/03/26", "%d/%m/%Y", &t));
  EXPECT_FALSE(ParseWithFormat("01/03/2026 ", "%d/%m/%Y", &t));
  EXPECT_FALSE(ParseWithFormat("2026-03-01", "%d/%m/%Y", &t));
  EXPECT_FALSE(ParseWithFormat("01/03/1899", "%d/%m/%Y", &t));
}

TEST(Formats, AYearOutsideTheRangeIsToldApart) {
  CivilTime t;
  int year = -1;
  EXPECT_FALSE(ParseWithFormat("31/12/1899", "%d/%m/%Y", &t, &year));
  EXPECT_EQ(year, 1899);
  year = -1;
  EXPECT_FALSE(ParseWithFormat("01/01/2201 09:00", "%d/%m/%Y %H:%M", &t, &year));
  EXPECT_EQ(year, 2201);
  // Not a real date, or not matching: the year is not the reason.
  year = -1;
  EXPECT_FALSE(ParseWithFormat("29/02/1899", "%d/%m/%Y", &t, &year));
  EXPECT_FALSE(ParseWithFormat("1899-12-31", "%d/%m/%Y", &t, &year));
  EXPECT_EQ(year, -1);
  EXPECT_TRUE(ParseWithFormat("01/01/1900", "%d/%m/%Y", &t, &year));
  EXPECT_TRUE(ParseWithFormat("31/12/2200", "%d/%m/%Y", &t, &year));
  EXPECT_EQ(year, -1);
}

TEST(Formats, NamesTimesAndOffsets) {
  CivilTime t;
  ASSERT_TRUE(ParseWithFormat("06-aug-2025", "%d-%b-%Y", &t));
  EXPECT_EQ(t.month, 8);
  ASSERT_TRUE(ParseWithFormat("6 September 2025", "%d %B %Y", &t));
  EXPECT_EQ(t.month, 9);
  ASSERT_TRUE(ParseWithFormat("01/03/2026 2:05 PM", "%d/%m/%Y %I:%M %p", &t));
  EXPECT_EQ(t.hour, 14);
  ASSERT_TRUE(ParseWithFormat("01/03/2026 12:05 am", "%d/%m/%Y %I:%M %p", &t));
  EXPECT_EQ(t.hour, 0);
  ASSERT_TRUE(ParseWithFormat("2026-03-01T09:30:00.25+01:00", "%Y-%m-%dT%H:%M:%S.%f%z", &t));
  EXPECT_EQ(t.nanos, 250000000);
  EXPECT_TRUE(t.has_offset);
  EXPECT_EQ(t.offset_seconds, 3600);
  EXPECT_FALSE(ParseWithFormat("01/03/2026 24:00", "%d/%m/%Y %H:%M", &t));
  EXPECT_FALSE(ParseWithFormat("01/03/2026 10:60", "%d/%m/%Y %H:%M", &t));
}

TEST(Formats, CheckFormat) {
  EXPECT_EQ(CheckFormat("%d/%m/%Y"), "");
  EXPECT_EQ(CheckFormat("%d/%m/%Y %I:%M %p"), "");
  EXPECT_NE(CheckFormat("%d/%m").find("must name the year"), std::string::npos);
  EXPECT_NE(CheckFormat("%d/%m/%y").find("unknown directive %y"), std::string::npos);
  EXPECT_NE(CheckFormat("%d/%m/%Y %").find("lone '%'"), std::string::npos);
  EXPECT_NE(CheckFormat("%d/%m/%Y %I:%M").find("%p"), std::string::npos);
}

int64_t Unix(const std::string& text, TimeZone zone) {
  CivilTime t;
  EXPECT_TRUE(ParseWithFormat(text, "%Y-%m-%d %H:%M", &t)) << text;
  return ToUnixSeconds(t, zone);
}

TEST(Formats, EuropeLondon) {
  // 2025: BST from 30 March 01:00 UTC to 26 October 01:00 UTC.
  EXPECT_EQ(Unix("2025-01-15 12:00", TimeZone::kEuropeLondon), 1736942400);  // GMT
  EXPECT_EQ(Unix("2025-07-15 12:00", TimeZone::kEuropeLondon), 1752577200);  // BST: 11:00Z
  EXPECT_EQ(Unix("2025-07-15 12:00", TimeZone::kUtc), 1752580800);
  EXPECT_EQ(Unix("2025-03-30 00:59", TimeZone::kEuropeLondon), 1743296340);  // GMT
  EXPECT_EQ(Unix("2025-03-30 02:00", TimeZone::kEuropeLondon), 1743296400);  // BST = 01:00Z
  // The skipped hour is read as GMT; the repeated hour as its first (BST).
  EXPECT_EQ(Unix("2025-03-30 01:30", TimeZone::kEuropeLondon), 1743298200);
  EXPECT_EQ(Unix("2025-10-26 01:30", TimeZone::kEuropeLondon), 1761438600);  // 00:30Z
  EXPECT_EQ(Unix("2025-10-26 02:00", TimeZone::kEuropeLondon), 1761444000);  // GMT
  CivilTime t;
  ASSERT_TRUE(ParseWithFormat("2025-07-15 12:00+0000", "%Y-%m-%d %H:%M%z", &t));
  EXPECT_EQ(ToUnixSeconds(t, TimeZone::kEuropeLondon), 1752580800);  // the offset wins
}

TEST(Formats, DaysFromCivil) {
  EXPECT_EQ(DaysFromCivil(1970, 1, 1), 0);
  EXPECT_EQ(DaysFromCivil(2000, 3, 1), 11017);
  EXPECT_EQ(DaysFromCivil(1900, 1, 1), -25567);
}

// ---------------------------------------------------------------------------
// SHA-256 (FIPS 180-4 test vectors)
// ---------------------------------------------------------------------------

std::string Sha(const std::string& s) {
  Sha256 h;
  h.Update(s);
  return Sha256::Hex(h.Finish());
}

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(Sha(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  Sha256 h;
  const std::string chunk(1000, 'a');
  for (int i = 0; i < 1000; ++i) h.Update(chunk);
  EXPECT_EQ(Sha256::Hex(h.Finish()),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, UpdateInPiecesEqualsWhole) {
  std::string text;
  for (int i = 0; i < 300; ++i) text += static_cast<char>('a' + i % 26);
  for (size_t split : {0u, 1u, 55u, 56u, 63u, 64u, 65u, 128u, 299u}) {
    Sha256 h;
    h.Update(std::string_view(text).substr(0, split));
    h.Update(std::string_view(text).substr(split));
    EXPECT_EQ(Sha256::Hex(h.Finish()), Sha(text)) << split;
  }
}

}  // namespace
}  // namespace icr::adapters::csv
