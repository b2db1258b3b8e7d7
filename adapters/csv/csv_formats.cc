// Date and time formats. See csv_formats.h for the contract.
#include "adapters/csv/csv_formats.h"

#include "broker/civil_time.h"

#include <cctype>

namespace icr::adapters::csv {
namespace {

constexpr const char* kMonthNames[12] = {"january",   "february", "march",    "april",
                                         "may",       "june",     "july",     "august",
                                         "september", "october",  "november", "december"};

using civil::DaysInMonth;

char Lower(char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); }

// Reads 1..max_digits digits (exactly `max_digits` when exact) at text[*i].
bool Digits(std::string_view text, size_t* i, int min_digits, int max_digits, int* out) {
  int value = 0, n = 0;
  while (*i < text.size() && n < max_digits && std::isdigit(static_cast<unsigned char>(text[*i]))) {
    value = value * 10 + (text[*i] - '0');
    ++*i;
    ++n;
  }
  if (n < min_digits) return false;
  *out = value;
  return true;
}

}  // namespace

int64_t DaysFromCivil(int y, int m, int d) { return civil::DaysFromCivil(y, m, d); }

bool IsValidDate(int year, int month, int day) { return civil::IsValidDate(year, month, day); }

std::string CheckFormat(std::string_view format) {
  bool year = false, month = false, day = false, hour12 = false, ampm = false;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%') continue;
    if (i + 1 == format.size()) return "ends with a lone '%' (write %% for a percent sign)";
    switch (format[++i]) {
      case 'Y':
        year = true;
        break;
      case 'm':
      case 'b':
      case 'B':
        month = true;
        break;
      case 'd':
        day = true;
        break;
      case 'I':
        hour12 = true;
        break;
      case 'p':
        ampm = true;
        break;
      case 'H':
      case 'M':
      case 'S':
      case 'f':
      case 'z':
      case '%':
        break;
      default:
        return std::string("has the unknown directive %") + format[i] +
               " (known: %d %m %Y %b %B %H %I %p %M %S %f %z %%)";
    }
  }
  if (!year || !month || !day) {
    return "must name the year (%Y), the month (%m, %b or %B) and the day (%d)";
  }
  if (hour12 != ampm) return "%I (12-hour clock) and %p (AM/PM) go together";
  return {};
}

bool ParseWithFormat(std::string_view text, std::string_view format, CivilTime* out,
                     int* year_out_of_range) {
  CivilTime t;
  int hour12 = -1;
  int pm = -1;  // -1 unset, 0 AM, 1 PM
  size_t i = 0;
  for (size_t f = 0; f < format.size(); ++f) {
    if (format[f] != '%') {
      if (i >= text.size() || text[i] != format[f]) return false;
      ++i;
      continue;
    }
    if (++f == format.size()) return false;
    switch (format[f]) {
      case 'Y':
        if (!Digits(text, &i, 4, 4, &t.year)) return false;
        break;
      case 'm':
        if (!Digits(text, &i, 1, 2, &t.month)) return false;
        break;
      case 'd':
        if (!Digits(text, &i, 1, 2, &t.day)) return false;
        break;
      case 'H':
        if (!Digits(text, &i, 1, 2, &t.hour) || t.hour > 23) return false;
        break;
      case 'I':
        if (!Digits(text, &i, 1, 2, &hour12) || hour12 < 1 || hour12 > 12) return false;
        break;
      case 'M':
        if (!Digits(text, &i, 1, 2, &t.minute) || t.minute > 59) return false;
        break;
      case 'S':
        if (!Digits(text, &i, 1, 2, &t.second) || t.second > 59) return false;
        break;
      case 'f': {
        int digits = 0;
        int32_t nanos = 0;
        while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])) && digits < 9) {
          nanos = nanos * 10 + (text[i] - '0');
          ++i;
          ++digits;
        }
        if (digits == 0) return false;
        for (int k = digits; k < 9; ++k) nanos *= 10;
        t.nanos = nanos;
        break;
      }
      case 'p': {
        if (i + 2 > text.size()) return false;
        const char a = Lower(text[i]), b = Lower(text[i + 1]);
        if (b != 'm' || (a != 'a' && a != 'p')) return false;
        pm = a == 'p';
        i += 2;
        break;
      }
      case 'b':
      case 'B': {
        int found = 0;
        for (int m = 0; m < 12 && !found; ++m) {
          const std::string_view name = kMonthNames[m];
          const size_t len = format[f] == 'b' ? 3 : name.size();
          if (i + len > text.size()) continue;
          bool same = true;
          for (size_t k = 0; k < len && same; ++k) same = Lower(text[i + k]) == name[k];
          if (same) {
            found = m + 1;
            i += len;
          }
        }
        if (!found) return false;
        t.month = found;
        break;
      }
      case 'z': {
        if (i < text.size() && (text[i] == 'Z' || text[i] == 'z')) {
          ++i;
          t.has_offset = true;
          t.offset_seconds = 0;
          break;
        }
        if (i >= text.size() || (text[i] != '+' && text[i] != '-')) return false;
        const int sign = text[i] == '-' ? -1 : 1;
        ++i;
        int hh = 0, mm = 0;
        if (!Digits(text, &i, 2, 2, &hh)) return false;
        if (i < text.size() && text[i] == ':') ++i;
        if (!Digits(text, &i, 2, 2, &mm)) return false;
        if (hh > 14 || mm > 59) return false;
        t.has_offset = true;
        t.offset_seconds = sign * (hh * 3600 + mm * 60);
        break;
      }
      case '%':
        if (i >= text.size() || text[i] != '%') return false;
        ++i;
        break;
      default:
        return false;
    }
  }
  if (i != text.size()) return false;
  if (hour12 >= 0) {
    if (pm < 0) return false;
    t.hour = hour12 % 12 + (pm ? 12 : 0);
  }
  if (!IsValidDate(t.year, t.month, t.day)) return false;
  if (t.year < kMinYear || t.year > kMaxYear) {
    if (year_out_of_range != nullptr) *year_out_of_range = t.year;
    return false;
  }
  *out = t;
  return true;
}

bool ParseTimeZone(std::string_view name, TimeZone* out) {
  if (name == "Europe/London") {
    *out = TimeZone::kEuropeLondon;
    return true;
  }
  if (name == "UTC" || name == "GMT" || name == "Z" || name == "Etc/UTC") {
    *out = TimeZone::kUtc;
    return true;
  }
  return false;
}

int64_t ToUnixSeconds(const CivilTime& t, TimeZone zone) {
  const int64_t local =
      DaysFromCivil(t.year, t.month, t.day) * 86400 + t.hour * 3600 + t.minute * 60 + t.second;
  if (t.has_offset) return local - t.offset_seconds;
  if (zone == TimeZone::kUtc) return local;
  return civil::LondonLocalToUtc(local, t.year);
}

}  // namespace icr::adapters::csv
