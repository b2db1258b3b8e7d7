// An HTTP/1.1 answer as the tests see it, read with Boost.Beast: status,
// headers (names lower-cased) and body. Header-only: only the tests that
// speak HTTP (the FHIR endpoint, the malformed-input suite) pull in Beast.
#pragma once

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <cctype>
#include <map>
#include <string>

namespace icr::testing {

struct HttpReply {
  int status = 0;  // 0: no answer (see error)
  std::string error;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;

  std::string Header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

// Reads one response (a body of up to 64 MiB) from `stream` into *reply; a
// read error is left in reply->error ("read: ...") with status 0.
template <typename Stream>
void ReadHttpReply(Stream& stream, boost::beast::flat_buffer& buffer, HttpReply* reply) {
  namespace http = boost::beast::http;
  boost::beast::error_code ec;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 20);
  http::read(stream, buffer, parser, ec);
  if (ec) {
    reply->error = "read: " + ec.message();
    return;
  }
  const auto& res = parser.get();
  reply->status = static_cast<int>(res.result_int());
  for (const auto& f : res) {
    std::string name(f.name_string());
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    reply->headers[name] = std::string(f.value());
  }
  reply->body = res.body();
}

}  // namespace icr::testing
