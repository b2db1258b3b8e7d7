// Calendar arithmetic shared by validation and every adapter that reads
// dates and local times (HL7 TS, FHIR dateTime, CSV exports): proleptic
// Gregorian days since 1970-01-01, and the UK's clock (GMT, or BST = UTC+1
// from 01:00 UTC on the last Sunday of March to 01:00 UTC on the last Sunday
// of October, the rule since 1996; earlier years are read as GMT).
//
// Header-only and constexpr so the fuzz builds, which compile parsers alone,
// need no extra sources. Pure functions; safe from any thread.
#pragma once

#include <cstdint>

namespace icr::civil {

constexpr bool IsLeapYear(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

// REQUIRES: 1 <= month <= 12.
constexpr int DaysInMonth(int64_t year, int month) {
  constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return kDays[month - 1] + (month == 2 && IsLeapYear(year) ? 1 : 0);
}

constexpr bool IsValidDate(int64_t year, int month, int day) {
  return month >= 1 && month <= 12 && day >= 1 && day <= DaysInMonth(year, month);
}

// Days since 1970-01-01 (Howard Hinnant's days_from_civil).
constexpr int64_t DaysFromCivil(int64_t y, int m, int d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

// 0 = Sunday, for days since 1970-01-01 (a Thursday).
constexpr int Weekday(int64_t days) { return static_cast<int>(((days % 7) + 11) % 7); }

// 01:00 UTC on the last Sunday of `month`, in seconds since the epoch.
constexpr int64_t LastSundayUtc0100(int64_t year, int month) {
  int64_t last = DaysFromCivil(year, month, DaysInMonth(year, month));
  last -= Weekday(last);
  return last * 86400 + 3600;
}

constexpr bool IsBritishSummerTime(int64_t utc_seconds, int64_t year) {
  if (year < 1996) return false;
  return utc_seconds >= LastSundayUtc0100(year, 3) && utc_seconds < LastSundayUtc0100(year, 10);
}

// A UK wall-clock time (seconds since the epoch as if it were UTC) to UTC.
// A repeated autumn hour is read as its first (BST) occurrence; a skipped
// spring hour as GMT.
constexpr int64_t LondonLocalToUtc(int64_t local_seconds, int64_t year) {
  const int64_t as_bst = local_seconds - 3600;
  return IsBritishSummerTime(as_bst, year) ? as_bst : local_seconds;
}

}  // namespace icr::civil
