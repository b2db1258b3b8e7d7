// ADT mapping: one parsed HL7 v2 ADT message (versions 2.3 to 2.5.1) to the
// CareEvents it stands for, or the HL7 errors that stop it.
//
//   MappingResult r = MapAdt(msg, MappingOptions{});
//   if (r.ack == AckCode::kAA) ingest->Publish(std::move(r.events), true, done);
//   else  ... BuildAck(msg, r.ack, r.errors, ...)
//
// Triggers: A01 Admission, A02 Transfer, A03 Discharge, A04 EdAttendance
// (PV1-2 = E) or EncounterUpdate, A05 PreAdmission, A08 EncounterUpdate (PV1
// with PV1-19) or DemographicsUpdate, A11/A12/A13 EncounterCancellation,
// A28/A31 DemographicsUpdate, A40 NhsNumberMerge. A PD1-3 registered practice
// adds a GpRegistration event (source_message_id "<MSH-10>:PD1") to every
// trigger but the cancellations and A40. The full tables are in
// docs/adapters/hl7.md.
//
// The events are not yet validated: the broker's ingest does that. When it
// refuses them, ErrorFromValidation turns its message ("events[0].nhs_number:
// ...") back into the HL7 field the value came from.
//
// Pure functions; safe from any thread.
#pragma once

#include <string>
#include <vector>

#include "adapters/hl7/er7.h"
#include "adapters/hl7/hl7_error.h"
#include "icr/v1/events.pb.h"

namespace icr::adapters::hl7 {

struct MappingOptions {
  // care_setting of every event. Default: ACUTE.
  icr::v1::CareSetting care_setting = icr::v1::ACUTE;
  // Read HL7 times without an offset as Europe/London local time (true), or
  // as UTC (false). Default: true.
  bool assume_london_time = true;
};

struct MappingResult {
  // kAA: `events` are ready to publish. kAE/kAR: `errors` say why not.
  AckCode ack = AckCode::kAA;
  std::vector<Hl7Error> errors;
  std::vector<icr::v1::CareEvent> events;
  // MSH-9.2 (or EVN-1), for the ACK's MSH-9; may be unsupported.
  std::string trigger;
  // Where values came from, to name the field in validation errors.
  std::string occurred_at_field = "MSH-7";  // "EVN-6", "PV1-44", ...
  std::string nhs_number_field = "PID-3";   // or "PID-2"
  int nhs_number_repetition = 0;
};

// The trigger events MapAdt accepts, e.g. {"A01", "A02", ...}.
const std::vector<std::string>& SupportedTriggers();
// True for 2.3, 2.3.1, 2.4, 2.5 and 2.5.1.
bool IsSupportedVersion(const std::string& version);

MappingResult MapAdt(const Er7Message& msg, const MappingOptions& options);

// The HL7 error for the broker's validation message `message`
// ("events[1].gp_registration.practice: ..."): ERR-2 names the source field
// when it is known (PID-3, PV1-19, PD1-3, ...), ERR-3 is 101 for a missing
// value, 103 for an unknown code, else 102. ERR-8 never shows the broker's
// "events[i]" path: a problem with a whole event (its size) reads
// "message: the care event mapped from this message is too large: ...", one
// with a field no HL7 field is known for "message (care event field <path>):
// ...".
Hl7Error ErrorFromValidation(const std::string& message, const MappingResult& mapped);

// PV1-36 discharge disposition to DischargeDestination (NHS Data Dictionary
// discharge destination codes, or the enum names themselves).
// DISCHARGE_DESTINATION_UNSPECIFIED when the code is not known.
icr::v1::DischargeDestination DischargeDestinationFromCode(const std::string& code);

}  // namespace icr::adapters::hl7
