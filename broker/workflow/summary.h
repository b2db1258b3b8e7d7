// The care summary fold: a person's CareSummary (proto/icr/v1/workflow.proto)
// built from their committed events, one event at a time, in log order.
//
//   icr::v1::CareSummary summary;
//   for (const icr::v1::CareEvent& e : events_of_person) ApplyEventToSummary(e, &summary);
//   // On NHS_NUMBER_MERGE the caller also absorbs the retired number's summary:
//   AbsorbRetiredSummary(retired_summary, &summary);
//
// Pure and deterministic: no I/O, no clock, no globals; the same events in the
// same order give the same bytes. Safe from any thread on distinct summaries.
// The store-facing code (icr_broker) owns persistence and composes the two
// fields this fold never touches: open_referral and requested_nhs_number.
//
// Rules of ApplyEventToSummary ("matches" = the payload's encounter_id equals
// open_episode.encounter_id; "no episode" = open_episode unset). TRANSFER,
// DISCHARGE, MEDICALLY_OPTIMISED and EXPECTED_DISCHARGE_DATE_SET naming another
// encounter than the open one are stale (e.g. a late message from a hospital
// the person has since left) and change nothing but the bookkeeping.
//
//   every event        nhs_number = event.nhs_number if empty; events += 1;
//                      last_position = max(last_position, position);
//                      last_updates[source_system_id] = {source_organisation,
//                      care_setting, position, recorded_at} (one per source
//                      system, sorted by id; an older position never replaces
//                      a newer one). Then, by payload:
//   DEMOGRAPHICS_UPDATE  non-empty fields overwrite demographics; given_names
//                      replaced as a whole when non-empty.
//   ADMISSION          location = {IN_HOSPITAL, source_organisation,
//                      admission.location, since occurred_at}; open_episode =
//                      {encounter_id, source_organisation, admitted_at =
//                      occurred_at} (EDD and ready date cleared).
//   TRANSFER           matches or no episode: location = {IN_HOSPITAL,
//                      source_organisation, transfer.to, since occurred_at}.
//   DISCHARGE          matches or no episode: open_episode cleared; location =
//                      {kind by destination, destination_organisation, since
//                      occurred_at}: USUAL_RESIDENCE[_WITH_SUPPORT] -> AT_HOME,
//                      CARE_HOME_RESIDENTIAL/NURSING -> IN_CARE_HOME,
//                      STEP_DOWN_BED_DESTINATION -> IN_STEP_DOWN_BED,
//                      DIED -> DECEASED, any other -> OTHER.
//   MEDICALLY_OPTIMISED  matches: open_episode.discharge_ready_date; no
//                      episode: opens {encounter_id, source_organisation}
//                      with that date.
//   EXPECTED_DISCHARGE_DATE_SET  likewise, expected_discharge_date.
//   DISCHARGE_REFERRAL, PLACEMENT_REQUEST  needs.dementia / end_of_life /
//                      section_117 set the flag; flags are never cleared.
//   CARE_PACKAGE_START care_package = the package.
//   CARE_PACKAGE_END   care_package cleared if its package_id is the same.
//   GP_REGISTRATION    registered_gp_practice = practice.
//   CARE_SUMMARY_CONTRIBUTION  allergies unioned by (system, code), first
//                      seen kept. Alerts: one containing "safeguarding" sets
//                      flags.safeguarding and is NOT copied (no safeguarding
//                      detail in the summary); others are unioned (see
//                      AlertKey in summary.cc: case, surrounding spaces, '_'
//                      and '-' ignored; first spelling kept), and "dementia",
//                      "end of life", "section 117" also set their flag.
//                      Problems and medications are not summarised.
//   DEATH_NOTIFICATION date_of_death; location = {DECEASED, since
//                      occurred_at}; open_episode cleared. From then on,
//                      events that place the person (admission, transfer,
//                      discharge, medically optimised, EDD, package start,
//                      cancellation, another death) change only bookkeeping.
//   NHS_NUMBER_MERGE   retired_nhs_number added to retired_nhs_numbers
//                      (sorted, no duplicates, never the person's own).
//   ENCOUNTER_CANCELLATION of
//     ADMISSION        matches: open_episode and location cleared (kind
//                      KIND_UNKNOWN: where the person is is not known).
//     DISCHARGE        if location.kind != IN_HOSPITAL: location =
//                      {IN_HOSPITAL, source_organisation, since occurred_at}
//                      and the episode reopened (kept if it matches, else
//                      {encounter_id, source_organisation}).
//     TRANSFER         nothing: the previous ward is not known here.
//   SHARING_OBJECTION  flags.sharing_objection = !withdrawn (the latest
//                      objection event decides).
//   NATIONAL_DATA_OPT_OUT  flags.national_data_opt_out = opted_out.
//   MENTAL_HEALTH_EPISODE_START and every other type: bookkeeping only (the
//                      episode's detention status is never copied).
#pragma once

#include "icr/v1/events.pb.h"
#include "icr/v1/workflow.pb.h"

namespace icr::broker::workflow {

// Folds one committed event (position, recorded_at, event_type filled in)
// into `summary`, by the rules above. Deterministic, no I/O, no clock. Safe on
// an empty summary. REQUIRES: summary != nullptr.
void ApplyEventToSummary(const icr::v1::CareEvent& event, icr::v1::CareSummary* summary);

// Absorbs the summary of a retired NHS number into the survivor's (NHS
// number merge):
//   - retired.nhs_number and retired.retired_nhs_numbers are added to the
//     survivor's retired_nhs_numbers (sorted, no duplicates, never the
//     survivor's own number);
//   - fields the survivor lacks are taken from the retired summary:
//     demographics field by field, registered_gp_practice, care_package,
//     date_of_death, and location together with open_episode (they describe
//     one fact, so they are taken only as a pair, when the survivor has
//     neither a known location nor an open episode);
//   - flags are OR-ed; allergies and alerts unioned as by the fold (no
//     duplicates, survivor's first);
//   - last_updates merged, the newest position per source system winning;
//   - events summed; last_position = max.
// nhs_number, open_referral and requested_nhs_number are never changed.
// REQUIRES: survivor != nullptr, survivor != &retired.
void AbsorbRetiredSummary(const icr::v1::CareSummary& retired, icr::v1::CareSummary* survivor);

}  // namespace icr::broker::workflow
