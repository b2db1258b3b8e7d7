// CSV adapter, part 2: dates and times as case systems export them.
//
// A format is a pattern in strftime notation, matched strictly against the
// whole cell (no locale, no normalisation: "31/02/2026" is not a date):
//   %d day 1..31 and %m month 1..12 (one or two digits), %Y year (four
//   digits), %b / %B month name (Jan / January, any case), %H hour 0..23,
//   %I hour 1..12 with %p (AM / PM, any case), %M minute, %S second (one or
//   two digits), %f fraction of a second (1..9 digits), %z UTC offset (Z,
//   +01:00 or +0100), %% a percent sign. Any other character must appear as
//   it is.
// Examples: "%d/%m/%Y" (UK dates: 01/03/2026), "%d/%m/%Y %H:%M",
// "%Y-%m-%d", "%d-%b-%Y" (01-Mar-2026).
//
// Time zones: exports give local times without an offset. "Europe/London"
// (GMT in winter, BST = UTC+1 from 01:00 UTC on the last Sunday of March to
// 01:00 UTC on the last Sunday of October, the rule since 1996, applied to
// every year) or "UTC". A local time that occurs twice (the autumn hour) is
// taken as its first occurrence (BST); one that does not exist (the spring
// hour) is read as GMT. A %z offset in the cell wins over the zone.
//
// Pure functions; safe from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace icr::adapters::csv {

struct CivilTime {
  int year = 0, month = 0, day = 0;
  int hour = 0, minute = 0, second = 0;
  int32_t nanos = 0;
  bool has_offset = false;
  int offset_seconds = 0;  // east of UTC
};

enum class TimeZone { kEuropeLondon, kUtc };

// "" when `format` is usable, else the problem. A format must name the year
// (%Y), the month (%m, %b or %B) and the day (%d), and only known directives.
std::string CheckFormat(std::string_view format);

// The years a date may have (the broker's range for dates).
inline constexpr int kMinYear = 1900;
inline constexpr int kMaxYear = 2200;

// Matches `text` against `format`. False when it does not match or is not a
// real calendar date or clock time (year kMinYear..kMaxYear). When the only
// problem is the year (a real date such as 31/12/1899), *year_out_of_range
// (if given) is set to it.
bool ParseWithFormat(std::string_view text, std::string_view format, CivilTime* out,
                     int* year_out_of_range = nullptr);

// "Europe/London" or "UTC" (also "GMT", "Z"); false for anything else.
bool ParseTimeZone(std::string_view name, TimeZone* out);

// Seconds since 1970-01-01T00:00:00Z of a civil time: its own offset when it
// has one, else read in `zone`.
int64_t ToUnixSeconds(const CivilTime& t, TimeZone zone);

// Days since 1970-01-01 of a proleptic Gregorian date.
int64_t DaysFromCivil(int year, int month, int day);

// Whether year/month/day is a real date (1..12, 1..28/29/30/31).
bool IsValidDate(int year, int month, int day);

}  // namespace icr::adapters::csv
