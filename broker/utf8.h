// UTF-8 decoding for messages that must count or locate characters (the NHS
// number's length, the byte where a string stops being UTF-8). Well-formed
// means RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF.
//
// Header-only; pure functions, safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace icr::broker {

// The character (Unicode code point) that starts at s[*i], advancing *i past
// it. A byte that does not start a well-formed sequence is one character on
// its own: *i advances by one and the result is -1.
// REQUIRES: *i < s.size().
inline int32_t NextUtf8Character(std::string_view s, size_t* i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = byte(*i);
  if (b0 < 0x80) {
    ++*i;
    return b0;
  }
  size_t len = 0;
  int32_t cp = 0, min = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2, cp = b0 & 0x1F, min = 0x80;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3, cp = b0 & 0x0F, min = 0x800;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4, cp = b0 & 0x07, min = 0x10000;
  }
  if (len == 0 || *i + len > s.size()) {
    ++*i;
    return -1;
  }
  for (size_t k = 1; k < len; ++k) {
    const unsigned char b = byte(*i + k);
    if ((b & 0xC0) != 0x80) {
      ++*i;
      return -1;
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    ++*i;
    return -1;
  }
  *i += len;
  return cp;
}

// The offset of the first byte of `s` that does not start a well-formed
// UTF-8 sequence, or std::string_view::npos when all of `s` is UTF-8.
inline size_t FirstInvalidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t at = i;
    if (NextUtf8Character(s, &i) < 0) return at;
  }
  return std::string_view::npos;
}

// "" when `s` is UTF-8; else what is wrong, for a message that starts with
// the field's path: "is not valid UTF-8 (byte 15 is 0xE9); string fields
// must hold UTF-8 text".
inline std::string Utf8Problem(std::string_view s) {
  const size_t bad = FirstInvalidUtf8(s);
  if (bad == std::string_view::npos) return {};
  static const char* k = "0123456789ABCDEF";
  const auto b = static_cast<unsigned char>(s[bad]);
  return "is not valid UTF-8 (byte " + std::to_string(bad + 1) + " is 0x" + k[b >> 4] +
         k[b & 15] + "); string fields must hold UTF-8 text";
}

}  // namespace icr::broker
