#include "broker/filter.h"

#include <cctype>

#include "broker/nhs_number.h"

namespace icr::broker {
namespace {
std::string Upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}
}  // namespace

CompiledFilter::CompiledFilter(const icr::v1::EventFilter& f) {
  for (int t : f.event_types()) event_types_.insert(t);
  for (int s : f.care_settings()) care_settings_.insert(s);
  for (int p : f.priorities()) priorities_.insert(p);
  for (const auto& o : f.source_organisations()) source_organisations_.insert(Upper(o));
  for (const auto& n : f.nhs_numbers()) nhs_numbers_.insert(NormaliseNhsNumber(n));
  care_relationship_ = f.care_relationship();
  for (const auto& a : f.addressees()) {
    if (a.team_code().empty()) {
      addressee_orgs_.insert(Upper(a.organisation()));
    } else {
      addressee_teams_.insert(Upper(a.organisation()) + "/" + a.team_code());
    }
  }
}

bool CompiledFilter::Match(const icr::v1::CareEvent& e) const {
  if (!event_types_.empty() && !event_types_.count(e.event_type())) return false;
  if (!care_settings_.empty() && !care_settings_.count(e.care_setting())) return false;
  if (!priorities_.empty() && !priorities_.count(e.priority())) return false;
  if (!source_organisations_.empty() && !source_organisations_.count(e.source_organisation())) {
    return false;
  }
  if (!nhs_numbers_.empty() && !nhs_numbers_.count(e.nhs_number())) return false;
  if (!addressee_orgs_.empty() || !addressee_teams_.empty()) {
    if (!e.has_addressee()) return false;
    const auto& a = e.addressee();
    if (!addressee_orgs_.count(a.organisation()) &&
        !addressee_teams_.count(a.organisation() + "/" + a.team_code())) {
      return false;
    }
  }
  if (team_) {
    if (RoutedToTeam(e, team_->team)) return true;
    return team_->care_relationship && team_->related && team_->related(e, team_->team.ref());
  }
  return true;
}

void CompiledFilter::SetTeam(const icr::v1::Team& team, RelationshipFn related) {
  auto route = std::make_shared<TeamRoute>();
  route->team = team;
  route->care_relationship = care_relationship_;
  route->related = std::move(related);
  team_ = std::move(route);
}

bool CompiledFilter::RoutedToTeam(const icr::v1::CareEvent& e, const icr::v1::Team& team) {
  const auto& ref = team.ref();
  if (e.has_addressee() && e.addressee().organisation() == ref.organisation() &&
      e.addressee().team_code() == ref.team_code()) {
    return true;
  }
  if (team.role() != icr::v1::ROLE_BROKERAGE || e.place() != team.place() ||
      e.place() == icr::v1::PLACE_UNSPECIFIED) {
    return false;
  }
  // Brokerage sees the placement traffic of its Place (and the escalations
  // about missing offers).
  switch (e.payload_case()) {
    case icr::v1::CareEvent::kPlacementRequest: {
      if (team.service_types().empty()) return true;
      for (int t : team.service_types()) {
        if (t == e.placement_request().service_type()) return true;
      }
      return false;
    }
    case icr::v1::CareEvent::kPlacementOffer:
    case icr::v1::CareEvent::kPlacementAcceptance:
    case icr::v1::CareEvent::kPlacementDecline:
    case icr::v1::CareEvent::kPlacementCancellation:
      return true;
    case icr::v1::CareEvent::kEscalation:
      return e.escalation().kind() == icr::v1::NO_OFFER;
    default:
      return false;
  }
}

}  // namespace icr::broker
