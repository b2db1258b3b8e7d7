#include "broker/filter.h"

#include <cctype>
#include <type_traits>

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
  // The scope last: it may read the store.
  return MatchConditions(e) && (!scope_ || (*scope_)(e));
}

bool CompiledFilter::MatchConditions(const icr::v1::CareEvent& e) const {
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

namespace {
template <typename Set>
std::vector<std::string> Keys(const char* prefix, const Set& values) {
  std::vector<std::string> out;
  out.reserve(values.size());
  for (const auto& v : values) {
    if constexpr (std::is_same_v<typename Set::value_type, int>) {
      out.push_back(prefix + std::to_string(v));
    } else {
      out.push_back(prefix + v);
    }
  }
  return out;
}
}  // namespace

std::vector<std::string> CompiledFilter::RoutingKeys() const {
  // Most selective first: a person, an addressee, a source, a type ...
  if (!nhs_numbers_.empty()) return Keys("n:", nhs_numbers_);
  if (!addressee_orgs_.empty() || !addressee_teams_.empty()) {
    std::unordered_set<std::string> orgs = addressee_orgs_;
    for (const auto& t : addressee_teams_) orgs.insert(t.substr(0, t.find('/')));
    return Keys("a:", orgs);
  }
  if (!source_organisations_.empty()) return Keys("s:", source_organisations_);
  if (!event_types_.empty()) return Keys("t:", event_types_);
  if (!care_settings_.empty()) return Keys("c:", care_settings_);
  if (!priorities_.empty()) return Keys("p:", priorities_);
  if (team_ && !team_->care_relationship) {
    // A team without care relationships sees what is addressed to it and,
    // for brokerage, its Place's placement traffic.
    std::vector<std::string> keys{"a:" + team_->team.ref().organisation()};
    if (team_->team.role() == icr::v1::ROLE_BROKERAGE &&
        team_->team.place() != icr::v1::PLACE_UNSPECIFIED) {
      keys.push_back("l:" + std::to_string(team_->team.place()));
    }
    return keys;
  }
  return {};
}

void CompiledFilter::EventRoutingKeys(const icr::v1::CareEvent& e, std::vector<std::string>* out) {
  out->clear();
  out->push_back("n:" + e.nhs_number());
  if (e.has_addressee()) out->push_back("a:" + e.addressee().organisation());
  out->push_back("s:" + e.source_organisation());
  out->push_back("t:" + std::to_string(e.event_type()));
  out->push_back("c:" + std::to_string(e.care_setting()));
  out->push_back("p:" + std::to_string(e.priority()));
  if (e.place() != icr::v1::PLACE_UNSPECIFIED) out->push_back("l:" + std::to_string(e.place()));
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
