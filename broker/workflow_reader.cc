#include "broker/workflow_reader.h"

#include "broker/workflow/referral.h"
#include "broker/workflow/state_machine.h"

namespace icr::broker {

namespace keys = workflow::keys;

store::Status ResolveNhsNumber(store::EventStore* store, const std::string& nhs,
                               std::string* survivor) {
  std::string value;
  store::Status s = store->GetState(keys::Key(keys::kMerged, nhs), &value);
  if (s.ok()) {
    *survivor = value;
    return s;
  }
  if (s.code() != store::StatusCode::kNotFound) return s;
  *survivor = nhs;
  return store::Status::Ok();
}

store::Status ReadReferral(store::EventStore* store, const std::string& referral_id,
                           icr::v1::Referral* referral) {
  std::string bytes;
  store::Status s = store->GetState(keys::Key(keys::kReferral, referral_id), &bytes);
  if (s.code() == store::StatusCode::kNotFound) {
    return store::Status::NotFound("no referral with referral_id '" + referral_id + "'");
  }
  if (!s.ok()) return s;
  if (!referral->ParseFromString(bytes)) {
    return store::Status::Corruption("the stored referral " + referral_id +
                                     " could not be parsed");
  }
  return FillReferralNeeds(store, referral);
}

store::Status ScanReferrals(store::EventStore* store,
                            const std::function<bool(icr::v1::Referral&&)>& visit) {
  store::Status inner;
  store::Status s =
      store->ScanState(std::string(keys::kReferral), [&](std::string_view, std::string_view v) {
        icr::v1::Referral r;
        if (!r.ParseFromArray(v.data(), static_cast<int>(v.size()))) {
          inner = store::Status::Corruption("a stored referral could not be parsed");
          return false;
        }
        return visit(std::move(r));
      });
  return s.ok() ? inner : s;
}

store::Status ReadPersonNumbers(store::EventStore* store, const std::string& nhs,
                                std::string* survivor, std::vector<std::string>* retired) {
  store::Status s = ResolveNhsNumber(store, nhs, survivor);
  if (!s.ok()) return s;
  retired->clear();
  std::string bytes;
  s = store->GetState(keys::Key(keys::kSummary, *survivor), &bytes);
  if (s.code() == store::StatusCode::kNotFound) return store::Status::Ok();
  if (!s.ok()) return s;
  icr::v1::CareSummary summary;
  if (!summary.ParseFromString(bytes)) {
    return store::Status::Corruption("the stored care summary of " + *survivor +
                                     " could not be parsed");
  }
  retired->assign(summary.retired_nhs_numbers().begin(), summary.retired_nhs_numbers().end());
  return store::Status::Ok();
}

store::Status FillReferralNeeds(store::EventStore* store, icr::v1::Referral* referral) {
  if (referral->created_position() == 0) return store::Status::Ok();
  store::EventPtr created;
  store::Status s = store->Get(referral->created_position(), &created);
  // The state is written with its event but becomes readable a moment
  // before the event's position is published: then the text is not there
  // yet, and the referral is answered without it.
  if (s.code() == store::StatusCode::kNotFound &&
      referral->created_position() > store->LastPosition()) {
    return store::Status::Ok();
  }
  if (!s.ok()) return s;
  const std::string& text = created->event.discharge_referral().needs().summary();
  if (!text.empty()) referral->mutable_needs()->set_summary(text);
  return store::Status::Ok();
}

store::Status ReadCareSummary(store::EventStore* store, const std::string& nhs,
                              icr::v1::CareSummary* summary) {
  std::string survivor;
  store::Status s = ResolveNhsNumber(store, nhs, &survivor);
  if (!s.ok()) return s;
  std::string bytes;
  s = store->GetState(keys::Key(keys::kSummary, survivor), &bytes);
  if (s.code() == store::StatusCode::kNotFound) {
    return store::Status::NotFound("the broker holds no events about NHS number " + nhs);
  }
  if (!s.ok()) return s;
  if (!summary->ParseFromString(bytes)) {
    return store::Status::Corruption("the stored care summary of " + survivor +
                                     " could not be parsed");
  }
  summary->set_nhs_number(survivor);
  if (survivor != nhs) summary->set_requested_nhs_number(nhs);
  std::string referral_id;
  s = store->GetState(keys::Key(keys::kPerson, survivor), &referral_id);
  if (s.ok()) {
    icr::v1::Referral referral;
    s = ReadReferral(store, referral_id, &referral);
    if (!s.ok()) return s;
    if (workflow::IsOpen(referral.status()) || referral.in_d2a()) {
      *summary->mutable_open_referral() = std::move(referral);
    }
  } else if (s.code() != store::StatusCode::kNotFound) {
    return s;
  }
  return store::Status::Ok();
}

store::Status ReadTeam(store::EventStore* store, const icr::v1::TeamRef& ref,
                       icr::v1::Team* team) {
  std::string bytes;
  store::Status s = store->GetState(keys::TeamKey(ref), &bytes);
  if (s.code() == store::StatusCode::kNotFound) {
    return store::Status::NotFound("team " + TeamName(ref) +
                                   " is not registered (register it with "
                                   "icr.v1.Workflow/RegisterTeam)");
  }
  if (!s.ok()) return s;
  if (!team->ParseFromString(bytes)) {
    return store::Status::Corruption("the stored team " + TeamName(ref) + " could not be parsed");
  }
  return s;
}

store::Status ListAllTeams(store::EventStore* store, std::vector<icr::v1::Team>* teams) {
  bool corrupt = false;
  store::Status s = store->ScanState(std::string(keys::kTeam),
                                     [&](std::string_view, std::string_view value) {
                                       icr::v1::Team t;
                                       if (!t.ParseFromArray(value.data(),
                                                             static_cast<int>(value.size()))) {
                                         corrupt = true;
                                         return false;
                                       }
                                       teams->push_back(std::move(t));
                                       return true;
                                     });
  if (s.ok() && corrupt) return store::Status::Corruption("a stored team could not be parsed");
  return s;
}

namespace {

// `team_code` empty: any team of the organisation.
bool RelatedTo(store::EventStore* store, const std::string& nhs, const std::string& org,
               const std::string& team_code) {
  icr::v1::CareSummary summary;
  if (!ReadCareSummary(store, nhs, &summary).ok()) return false;
  if (!summary.registered_gp_practice().empty() && summary.registered_gp_practice() == org) {
    return true;
  }
  const auto kind = summary.location().kind();
  if ((kind == icr::v1::CurrentLocation::IN_HOSPITAL ||
       kind == icr::v1::CurrentLocation::IN_CARE_HOME ||
       kind == icr::v1::CurrentLocation::IN_STEP_DOWN_BED) &&
      summary.location().organisation() == org) {
    return true;
  }
  if (summary.has_open_referral()) {
    auto same = [&](const icr::v1::TeamRef& r) {
      return r.organisation() == org && (team_code.empty() || r.team_code() == team_code);
    };
    if (same(summary.open_referral().addressee()) || same(summary.open_referral().referrer())) {
      return true;
    }
  }
  return false;
}

}  // namespace

bool HasCareRelationship(store::EventStore* store, const std::string& nhs,
                         const icr::v1::TeamRef& team) {
  if (team.team_code().empty()) return false;  // a team is named by both parts
  return RelatedTo(store, nhs, team.organisation(), team.team_code());
}

bool HasCareRelationshipWithOrganisation(store::EventStore* store, const std::string& nhs,
                                         const std::string& organisation) {
  if (organisation.empty()) return false;
  return RelatedTo(store, nhs, organisation, "");
}

std::string TeamName(const icr::v1::TeamRef& ref) {
  return ref.organisation() + "/" + ref.team_code();
}

}  // namespace icr::broker
