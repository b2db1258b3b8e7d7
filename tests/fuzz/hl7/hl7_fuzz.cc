// libFuzzer target for the HL7 v2 path: ER7 parse, ADT mapping, the broker's
// validation and the ACK, exactly as the MLLP listener runs them (less the
// socket and the store). Properties checked beyond "no crash, hang or leak":
//  - every input gets an ACK that itself parses, with MSA-1 AA, AE or AR;
//  - Er7Escape + ParseEr7 + Get round-trips any text.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "adapters/hl7/ack.h"
#include "adapters/hl7/adt_mapping.h"
#include "adapters/hl7/er7.h"
#include "broker/validation.h"

using namespace icr::adapters::hl7;

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property failed: %s\n", what);
    std::abort();
  }
}

void CheckAck(const std::string& ack) {
  ParsedAck p;
  if (!ParseAck(ack, &p)) {
    Er7Message m;
    Er7Error e = ParseEr7(ack, Er7Limits{}, &m);
    std::fprintf(stderr, "ACK (%s):\n", e.ToString().c_str());
    for (char c : ack) std::fputc(c == '\r' ? '\n' : c, stderr);
  }
  Check(ParseAck(ack, &p), "the ACK parses");
  Check(p.msa1 == "AA" || p.msa1 == "AE" || p.msa1 == "AR", "MSA-1 is AA, AE or AR");
  Check(p.msa1 == "AA" || !p.err_codes.empty(), "AE/AR carry an ERR segment");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  AckParams params;
  params.control_id = "FUZZ1";
  params.now_seconds = 1750000000;

  Er7Message msg;
  MappingResult mapped;
  std::string ack;
  if (PrepareMessage(input, Er7Limits{}, MappingOptions{}, params, &msg, &mapped, &ack)) {
    // What the broker's ingest would say, then the ACK for it.
    std::string problem;
    for (size_t i = 0; i < mapped.events.size() && problem.empty(); ++i) {
      problem = icr::broker::ValidateAndNormaliseEvent(&mapped.events[i], 1750000000LL * 1000000,
                                                       icr::broker::ValidationOptions{},
                                                       "events[" + std::to_string(i) + "]");
    }
    icr::store::Status status = problem.empty() ? icr::store::Status::Ok()
                                                : icr::store::Status::InvalidArgument(problem);
    ack = AckForPublish(msg, mapped, status, params);
    CheckAck(AckForPublish(msg, mapped, icr::store::Status::Unavailable("x"), params));
  }
  CheckAck(ack);

  // Every field of whatever parsed is readable.
  for (size_t s = 0; s < msg.segment_count(); ++s) {
    for (int f = 1; f <= msg.FieldCount(s); ++f) {
      (void)msg.GetAt(s, f, 1, 2, 2);
      (void)msg.RepetitionCount(s, f);
    }
  }

  // Round trip: any text survives escaping (control characters other than
  // CR and LF become spaces; "" alone is HL7's null).
  if (size <= 4096) {
    std::string text(input);
    Er7Message m;
    Er7Error e = ParseEr7("MSH|^~\\&\rNTE|" + Er7Escape(text, Er7Delimiters{}) + "\r", Er7Limits{},
                          &m);
    Check(e.ok(), "an escaped text parses");
    std::string expected;
    for (char c : text) {
      unsigned char u = static_cast<unsigned char>(c);
      expected += (u < 0x20 && c != '\r' && c != '\n') || u == 0x7f ? ' ' : c;
    }
    if (expected != "\"\"") Check(m.Get("NTE", 1) == expected, "escape round trip");
  }
  return 0;
}
