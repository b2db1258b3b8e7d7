#include "broker/workflow/summary.h"

#include <algorithm>
#include <iterator>
#include <string>
#include <string_view>

namespace icr::broker::workflow {
namespace {

using icr::v1::CareEvent;
using icr::v1::CareSummary;
using icr::v1::CurrentLocation;

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

// Moves the last element of `field` back until `less` says it is in place,
// so a field kept sorted stays sorted after an Add().
template <typename Field, typename Less>
void SiftLastIntoPlace(Field* field, Less less) {
  for (int i = field->size() - 1; i > 0 && less(field->Get(i), field->Get(i - 1)); --i) {
    field->SwapElements(i, i - 1);
  }
}

// An all-zero Date is proto3's "not given".
bool HasDate(const icr::v1::Date& d) { return d.year() != 0 || d.month() != 0 || d.day() != 0; }

bool EpisodeMatches(const CareSummary& summary, const std::string& encounter_id) {
  return summary.has_open_episode() && summary.open_episode().encounter_id() == encounter_id;
}

// Movement events for an encounter other than the open one are stale (e.g. a
// late message from the hospital the person has already left for another):
// they must not move the person.
bool MayMove(const CareSummary& summary, const std::string& encounter_id) {
  return !summary.has_open_episode() || EpisodeMatches(summary, encounter_id);
}

// The flags to set; a false leaves the summary's flag as it is (flags are
// only ever set). Touching flags only when something is set keeps an
// all-false CareFlags from appearing in the summary's bytes.
struct Flags {
  bool dementia = false;
  bool end_of_life = false;
  bool section_117 = false;
  bool safeguarding = false;
};

void SetFlags(const Flags& set, CareSummary* summary) {
  if (!set.dementia && !set.end_of_life && !set.section_117 && !set.safeguarding) return;
  icr::v1::CareFlags* flags = summary->mutable_flags();
  if (set.dementia) flags->set_dementia(true);
  if (set.end_of_life) flags->set_end_of_life(true);
  if (set.section_117) flags->set_section_117(true);
  if (set.safeguarding) flags->set_safeguarding(true);
}

// Lower-cases ASCII, trims spaces, reads '_' and '-' as spaces and collapses
// runs of spaces: "End_of-Life " and "end of life" are the same alert.
std::string AlertKey(std::string_view alert) {
  std::string key;
  key.reserve(alert.size());
  for (char c : alert) {
    if (c == '_' || c == '-' || c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      if (!key.empty() && key.back() != ' ') key.push_back(' ');
    } else if (c >= 'A' && c <= 'Z') {
      key.push_back(static_cast<char>(c - 'A' + 'a'));
    } else {
      key.push_back(c);
    }
  }
  if (!key.empty() && key.back() == ' ') key.pop_back();
  return key;
}

// Spaces are dropped before looking for "safeguarding" so that spellings
// like "Safe-guarding" cannot slip detail into the summary.
bool IsSafeguardingAlert(const std::string& key) {
  std::string squeezed;
  std::copy_if(key.begin(), key.end(), std::back_inserter(squeezed),
               [](char c) { return c != ' '; });
  return squeezed.find("safeguarding") != std::string::npos;
}

// Adds one alert to the summary by the CARE_SUMMARY_CONTRIBUTION rule. Also
// used when absorbing a retired summary, so an alert can never bypass the
// safeguarding filter whichever way it arrives.
void AddAlert(const std::string& alert, CareSummary* summary) {
  const std::string key = AlertKey(alert);
  if (key.empty()) return;
  if (IsSafeguardingAlert(key)) {
    SetFlags(Flags{.safeguarding = true}, summary);
    return;
  }
  SetFlags(Flags{.dementia = key == "dementia",
                 .end_of_life = key == "end of life",
                 .section_117 = key == "section 117"},
           summary);
  for (const std::string& existing : summary->alerts()) {
    if (AlertKey(existing) == key) return;
  }
  summary->add_alerts(alert);
}

void AddAllergy(const icr::v1::Code& allergy, CareSummary* summary) {
  for (const icr::v1::Code& existing : summary->allergies()) {
    if (existing.system() == allergy.system() && existing.code() == allergy.code()) return;
  }
  *summary->add_allergies() = allergy;
}

// Sorted, no duplicates, never the person's own number.
void AddRetiredNumber(const std::string& nhs, CareSummary* summary) {
  if (nhs.empty() || nhs == summary->nhs_number()) return;
  const auto& numbers = summary->retired_nhs_numbers();
  if (std::find(numbers.begin(), numbers.end(), nhs) != numbers.end()) return;
  summary->add_retired_nhs_numbers(nhs);
  SiftLastIntoPlace(summary->mutable_retired_nhs_numbers(),
                    [](const std::string& a, const std::string& b) { return a < b; });
}

// One entry per source system, sorted by id; the newest position wins, so
// neither a replayed event nor an older retired summary can roll one back.
void MergeSourceUpdate(const icr::v1::SourceUpdate& update, CareSummary* summary) {
  for (icr::v1::SourceUpdate& existing : *summary->mutable_last_updates()) {
    if (existing.source_system_id() == update.source_system_id()) {
      if (update.position() >= existing.position()) existing = update;
      return;
    }
  }
  *summary->add_last_updates() = update;
  SiftLastIntoPlace(summary->mutable_last_updates(),
                    [](const icr::v1::SourceUpdate& a, const icr::v1::SourceUpdate& b) {
                      return a.source_system_id() < b.source_system_id();
                    });
}

// Only ever set: a later referral without the need does not mean the person
// no longer has dementia.
void SetFlagsFromNeeds(const icr::v1::CareNeeds& needs, CareSummary* summary) {
  SetFlags(Flags{.dementia = needs.dementia(),
                 .end_of_life = needs.end_of_life(),
                 .section_117 = needs.section_117()},
           summary);
}

// The open episode for `encounter_id`: the matching one, or a new one with
// no admission time when none is open. REQUIRES: MayMove(encounter_id).
icr::v1::OpenEpisode* EpisodeFor(const CareEvent& event, const std::string& encounter_id,
                                 CareSummary* summary) {
  if (!summary->has_open_episode()) {
    summary->mutable_open_episode()->set_encounter_id(encounter_id);
    summary->mutable_open_episode()->set_organisation(event.source_organisation());
  }
  return summary->mutable_open_episode();
}

// Replaces the location: nothing of the previous one (ward, organisation)
// may survive a move.
CurrentLocation* NewLocation(const CareEvent& event, CurrentLocation::Kind kind,
                             CareSummary* summary) {
  CurrentLocation* location = summary->mutable_location();
  location->Clear();
  location->set_kind(kind);
  if (event.has_occurred_at()) *location->mutable_since() = event.occurred_at();
  return location;
}

// ---------------------------------------------------------------------------
// One function per payload type
// ---------------------------------------------------------------------------

void ApplyBookkeeping(const CareEvent& event, CareSummary* summary) {
  if (summary->nhs_number().empty()) summary->set_nhs_number(event.nhs_number());
  summary->set_events(summary->events() + 1);
  summary->set_last_position(std::max(summary->last_position(), event.position()));
  icr::v1::SourceUpdate update;
  update.set_source_system_id(event.source_system_id());
  update.set_source_organisation(event.source_organisation());
  update.set_care_setting(event.care_setting());
  update.set_position(event.position());
  if (event.has_recorded_at()) *update.mutable_recorded_at() = event.recorded_at();
  MergeSourceUpdate(update, summary);
}

// Non-empty fields of `update` overwrite those of `d`.
void MergeDemographics(const icr::v1::DemographicsUpdate& update, icr::v1::DemographicsUpdate* d) {
  if (!update.family_name().empty()) d->set_family_name(update.family_name());
  if (!update.given_names().empty()) *d->mutable_given_names() = update.given_names();
  if (HasDate(update.birth_date())) *d->mutable_birth_date() = update.birth_date();
  if (!update.gender().empty()) d->set_gender(update.gender());
  if (!update.postcode().empty()) d->set_postcode(update.postcode());
  if (update.place() != icr::v1::PLACE_UNSPECIFIED) d->set_place(update.place());
  if (!update.local_authority().empty()) d->set_local_authority(update.local_authority());
  if (!update.commissioner().empty()) d->set_commissioner(update.commissioner());
}

void ApplyAdmission(const CareEvent& event, CareSummary* summary) {
  const icr::v1::Admission& admission = event.admission();
  CurrentLocation* location = NewLocation(event, CurrentLocation::IN_HOSPITAL, summary);
  location->set_organisation(event.source_organisation());
  if (admission.has_location()) *location->mutable_location() = admission.location();

  // A new episode: dates set for an earlier stay do not carry over.
  icr::v1::OpenEpisode* episode = summary->mutable_open_episode();
  episode->Clear();
  episode->set_encounter_id(admission.encounter_id());
  episode->set_organisation(event.source_organisation());
  if (event.has_occurred_at()) *episode->mutable_admitted_at() = event.occurred_at();
}

void ApplyTransfer(const CareEvent& event, CareSummary* summary) {
  const icr::v1::Transfer& transfer = event.transfer();
  if (!MayMove(*summary, transfer.encounter_id())) return;
  CurrentLocation* location = NewLocation(event, CurrentLocation::IN_HOSPITAL, summary);
  location->set_organisation(event.source_organisation());
  if (transfer.has_to()) *location->mutable_location() = transfer.to();
}

CurrentLocation::Kind KindForDestination(icr::v1::DischargeDestination destination) {
  switch (destination) {
    case icr::v1::USUAL_RESIDENCE:
    case icr::v1::USUAL_RESIDENCE_WITH_SUPPORT:
      return CurrentLocation::AT_HOME;
    case icr::v1::CARE_HOME_RESIDENTIAL:
    case icr::v1::CARE_HOME_NURSING:
      return CurrentLocation::IN_CARE_HOME;
    case icr::v1::STEP_DOWN_BED_DESTINATION:
      return CurrentLocation::IN_STEP_DOWN_BED;
    case icr::v1::DIED:
      return CurrentLocation::DECEASED;
    default:
      return CurrentLocation::OTHER;
  }
}

void ApplyDischarge(const CareEvent& event, CareSummary* summary) {
  const icr::v1::Discharge& discharge = event.discharge();
  if (!MayMove(*summary, discharge.encounter_id())) return;
  summary->clear_open_episode();
  CurrentLocation* location =
      NewLocation(event, KindForDestination(discharge.destination()), summary);
  // Usually a care home's code; empty for home, kept for whatever else names one.
  location->set_organisation(discharge.destination_organisation());
}

void ApplyMedicallyOptimised(const CareEvent& event, CareSummary* summary) {
  const icr::v1::MedicallyOptimised& optimised = event.medically_optimised();
  if (!MayMove(*summary, optimised.encounter_id())) return;
  *EpisodeFor(event, optimised.encounter_id(), summary)->mutable_discharge_ready_date() =
      optimised.discharge_ready_date();
}

void ApplyExpectedDischargeDate(const CareEvent& event, CareSummary* summary) {
  const icr::v1::ExpectedDischargeDateSet& edd = event.expected_discharge_date_set();
  if (!MayMove(*summary, edd.encounter_id())) return;
  *EpisodeFor(event, edd.encounter_id(), summary)->mutable_expected_discharge_date() =
      edd.expected_discharge_date();
}

void ApplyCarePackageStart(const icr::v1::CarePackageStart& start, CareSummary* summary) {
  icr::v1::CarePackageSummary* package = summary->mutable_care_package();
  package->Clear();
  package->set_package_id(start.package_id());
  package->set_service_type(start.service_type());
  package->set_provider(start.provider());
  if (start.has_start_date()) *package->mutable_start_date() = start.start_date();
  package->set_hours_per_week(start.hours_per_week());
}

void ApplyCarePackageEnd(const icr::v1::CarePackageEnd& end, CareSummary* summary) {
  if (summary->has_care_package() && summary->care_package().package_id() == end.package_id()) {
    summary->clear_care_package();
  }
}

void ApplyContribution(const icr::v1::CareSummaryContribution& contribution, CareSummary* summary) {
  for (const icr::v1::Code& allergy : contribution.allergies()) AddAllergy(allergy, summary);
  for (const std::string& alert : contribution.alerts()) AddAlert(alert, summary);
}

void ApplyDeath(const CareEvent& event, CareSummary* summary) {
  *summary->mutable_date_of_death() = event.death_notification().date_of_death();
  NewLocation(event, CurrentLocation::DECEASED, summary);
  summary->clear_open_episode();
}

void ApplyCancellation(const CareEvent& event, CareSummary* summary) {
  const icr::v1::EncounterCancellation& cancel = event.encounter_cancellation();
  switch (cancel.cancelled_event_type()) {
    case icr::v1::ADMISSION:
      // The admission never happened: where the person is now is unknown
      // (the previous location was overwritten by the admission).
      if (EpisodeMatches(*summary, cancel.encounter_id())) {
        summary->clear_open_episode();
        summary->clear_location();
      }
      break;
    case icr::v1::DISCHARGE:
      // The discharge never happened: the person is back in hospital.
      if (summary->location().kind() != CurrentLocation::IN_HOSPITAL) {
        NewLocation(event, CurrentLocation::IN_HOSPITAL, summary)
            ->set_organisation(event.source_organisation());
        if (!EpisodeMatches(*summary, cancel.encounter_id())) summary->clear_open_episode();
        EpisodeFor(event, cancel.encounter_id(), summary);
      }
      break;
    default:
      // TRANSFER: the ward before the transfer is not kept, so the summary
      // cannot step back; the next transfer or discharge corrects it.
      break;
  }
}

// Events that say where a person is or what care they are receiving.
bool PlacesPerson(CareEvent::PayloadCase c) {
  switch (c) {
    case CareEvent::kAdmission:
    case CareEvent::kTransfer:
    case CareEvent::kDischarge:
    case CareEvent::kMedicallyOptimised:
    case CareEvent::kExpectedDischargeDateSet:
    case CareEvent::kCarePackageStart:
    case CareEvent::kEncounterCancellation:
    case CareEvent::kDeathNotification:
      return true;
    default:
      return false;
  }
}

}  // namespace

void ApplyEventToSummary(const CareEvent& event, CareSummary* summary) {
  ApplyBookkeeping(event, summary);
  // After a death notification, a late message about a movement (a
  // discharge keyed days later, say) must not show the person elsewhere.
  if (summary->has_date_of_death() && PlacesPerson(event.payload_case())) return;
  switch (event.payload_case()) {
    case CareEvent::kDemographicsUpdate:
      MergeDemographics(event.demographics_update(), summary->mutable_demographics());
      break;
    case CareEvent::kAdmission:
      ApplyAdmission(event, summary);
      break;
    case CareEvent::kTransfer:
      ApplyTransfer(event, summary);
      break;
    case CareEvent::kDischarge:
      ApplyDischarge(event, summary);
      break;
    case CareEvent::kMedicallyOptimised:
      ApplyMedicallyOptimised(event, summary);
      break;
    case CareEvent::kExpectedDischargeDateSet:
      ApplyExpectedDischargeDate(event, summary);
      break;
    case CareEvent::kDischargeReferral:
      SetFlagsFromNeeds(event.discharge_referral().needs(), summary);
      break;
    case CareEvent::kPlacementRequest:
      SetFlagsFromNeeds(event.placement_request().needs(), summary);
      break;
    case CareEvent::kCarePackageStart:
      ApplyCarePackageStart(event.care_package_start(), summary);
      break;
    case CareEvent::kCarePackageEnd:
      ApplyCarePackageEnd(event.care_package_end(), summary);
      break;
    case CareEvent::kGpRegistration:
      summary->set_registered_gp_practice(event.gp_registration().practice());
      break;
    case CareEvent::kCareSummaryContribution:
      ApplyContribution(event.care_summary_contribution(), summary);
      break;
    case CareEvent::kDeathNotification:
      ApplyDeath(event, summary);
      break;
    case CareEvent::kNhsNumberMerge:
      AddRetiredNumber(event.nhs_number_merge().retired_nhs_number(), summary);
      break;
    case CareEvent::kEncounterCancellation:
      ApplyCancellation(event, summary);
      break;
    case CareEvent::kSharingObjection:
      // Set or withdrawn: the latest objection event decides.
      summary->mutable_flags()->set_sharing_objection(!event.sharing_objection().withdrawn());
      break;
    case CareEvent::kNationalDataOptOut:
      summary->mutable_flags()->set_national_data_opt_out(
          event.national_data_opt_out().opted_out());
      break;
    default:
      // MENTAL_HEALTH_EPISODE_START deliberately lands here: its detention
      // status is sensitive and stays out of the summary. The rest carry
      // nothing the summary shows (referral state is composed by the caller).
      break;
  }
}

void AbsorbRetiredSummary(const CareSummary& retired, CareSummary* survivor) {
  AddRetiredNumber(retired.nhs_number(), survivor);
  for (const std::string& nhs : retired.retired_nhs_numbers()) AddRetiredNumber(nhs, survivor);

  // Demographics field by field: the survivor's own values win and gaps are
  // filled, i.e. the survivor's merged over the retired ones.
  if (retired.has_demographics()) {
    icr::v1::DemographicsUpdate merged = retired.demographics();
    MergeDemographics(survivor->demographics(), &merged);
    *survivor->mutable_demographics() = merged;
  }
  if (survivor->registered_gp_practice().empty()) {
    survivor->set_registered_gp_practice(retired.registered_gp_practice());
  }
  const bool survivor_knows_whereabouts =
      survivor->location().kind() != CurrentLocation::KIND_UNKNOWN || survivor->has_open_episode();
  if (!survivor_knows_whereabouts) {
    if (retired.has_location()) *survivor->mutable_location() = retired.location();
    if (retired.has_open_episode()) *survivor->mutable_open_episode() = retired.open_episode();
  }
  if (!survivor->has_care_package() && retired.has_care_package()) {
    *survivor->mutable_care_package() = retired.care_package();
  }
  if (!HasDate(survivor->date_of_death()) && HasDate(retired.date_of_death())) {
    *survivor->mutable_date_of_death() = retired.date_of_death();
  }

  const icr::v1::CareFlags& flags = retired.flags();
  SetFlags(Flags{.dementia = flags.dementia(),
                 .end_of_life = flags.end_of_life(),
                 .section_117 = flags.section_117(),
                 .safeguarding = flags.safeguarding()},
           survivor);
  // An objection or opt-out made under either number stands for the person
  // (withholding is the safe side; a later event under the survivor decides).
  if (flags.sharing_objection()) survivor->mutable_flags()->set_sharing_objection(true);
  if (flags.national_data_opt_out()) survivor->mutable_flags()->set_national_data_opt_out(true);
  for (const icr::v1::Code& allergy : retired.allergies()) AddAllergy(allergy, survivor);
  for (const std::string& alert : retired.alerts()) AddAlert(alert, survivor);
  for (const icr::v1::SourceUpdate& update : retired.last_updates()) {
    MergeSourceUpdate(update, survivor);
  }

  survivor->set_events(survivor->events() + retired.events());
  survivor->set_last_position(std::max(survivor->last_position(), retired.last_position()));
}

}  // namespace icr::broker::workflow
