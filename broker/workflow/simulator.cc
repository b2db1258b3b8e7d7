#include "broker/workflow/simulator.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <queue>
#include <set>
#include <utility>

#include "broker/civil_time.h"
#include "broker/timestamp.h"
#include "broker/workflow/metrics.h"

namespace icr::broker::workflow {
namespace {

using icr::v1::CareEvent;
using icr::v1::DischargePathway;
using icr::v1::Place;
using icr::v1::ServiceType;

constexpr int64_t kSecond = 1000000;
constexpr int64_t kMinute = 60 * kSecond;
constexpr int64_t kHour = 60 * kMinute;
constexpr int64_t kDay = 24 * kHour;

// ---------------------------------------------------------------------------
// Randomness: SplitMix64, so that a seed gives the same stream on every
// platform and standard library (std:: distributions are not specified
// bit for bit).
// ---------------------------------------------------------------------------

uint64_t Mix(uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(Mix(seed ^ 0x1C2B3A4D5E6F7081ULL)) {}
  uint64_t U64() {
    state_ += 0x9E3779B97F4A7C15ULL;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  double Uniform() { return static_cast<double>(U64() >> 11) * 0x1.0p-53; }
  bool Chance(double p) { return Uniform() < p; }
  // Uniform in [lo, hi], inclusive.
  int64_t Between(int64_t lo, int64_t hi) {
    if (hi <= lo) return lo;
    return lo + static_cast<int64_t>(U64() % static_cast<uint64_t>(hi - lo + 1));
  }
  // Uniform whole seconds in [lo, hi] micros.
  int64_t Span(int64_t lo, int64_t hi) { return Between(lo / kSecond, hi / kSecond) * kSecond; }
  template <typename T, size_t N>
  const T& Pick(const T (&items)[N]) {
    return items[U64() % N];
  }

 private:
  uint64_t state_;
};

// ---------------------------------------------------------------------------
// The organisations (illustrative local codes for councils and providers,
// as in docs/examples; ODS codes for the trusts).
// ---------------------------------------------------------------------------

struct Site {
  const char* org;
  const char* system;
  const char* short_name;  // team codes: HSCT-UHCW
  icr::v1::CareSetting setting;
  const char* site_codes[2];
  double share;
  double place_weights[4];  // COVENTRY, RUGBY, WARWICKSHIRE_NORTH, SOUTH_WARWICKSHIRE
};

constexpr Site kSites[] = {
    {"RKB", "uhcw-epr", "UHCW", icr::v1::ACUTE, {"RKB01", "RKB03"}, 0.45, {0.68, 0.22, 0.07, 0.03}},
    {"RLT", "geh-pas", "GEH", icr::v1::ACUTE, {"RLT01", "RLT01"}, 0.20, {0.08, 0.04, 0.86, 0.02}},
    {"RJC", "swft-epr", "SWFT", icr::v1::ACUTE, {"RJC02", "RJC02"}, 0.25, {0.03, 0.04, 0.03, 0.90}},
    {"RYG",
     "cwpt-epr",
     "CWPT",
     icr::v1::COMMUNITY,
     {"RYG12", "RYG31"},
     0.10,
     {0.40, 0.15, 0.20, 0.25}},
};
constexpr int kSiteCount = 4;

struct Council {
  const char* org;
  const char* social_care_system;
  const char* brokerage_system;
  const char* local_authority;
};
constexpr Council kCoventry = {"CCC", "ccc-social-care", "ccc-brokerage", "Coventry"};
constexpr Council kWarwickshire = {"WCC", "wcc-social-care", "wcc-brokerage", "Warwickshire"};
const Council& CouncilOf(Place p) { return p == icr::v1::COVENTRY ? kCoventry : kWarwickshire; }

const char* const kWards[] = {"Ward 10",        "Ward 21",     "Ward 33",        "Ward 40",
                              "Elderly Care 2", "Stroke Unit", "Orthopaedics 1", "Respiratory 3"};
const char* const kFamilyNames[] = {"Smith",   "Jones",  "Patel",  "Williams", "Brown",  "Taylor",
                                    "Khan",    "Davies", "Evans",  "Wilson",   "Thomas", "Kaur",
                                    "Roberts", "Walker", "Wright", "Hughes",   "Singh",  "Green"};
const char* const kGivenNames[] = {
    "Margaret", "John",  "Patricia", "David",  "Susan",  "Peter", "Joan",    "Michael",  "Barbara",
    "Raj",      "Elsie", "George",   "Doreen", "Harjit", "Irene", "Stanley", "Gurpreet", "Jean"};
const char* const kPostcodes[4][4] = {
    {"CV1 2AB", "CV2 4DE", "CV5 6FG", "CV6 1HJ"},       // Coventry
    {"CV21 2AA", "CV22 5BB", "CV23 0CC", "CV21 3DD"},   // Rugby
    {"CV10 7EE", "CV11 4FF", "CV12 8GG", "B78 2HH"},    // Warwickshire North
    {"CV31 1JJ", "CV32 5KK", "CV34 4LL", "CV37 6MM"}};  // South Warwickshire

const char* const kHomeSupport[2][3] = {{"VNA12", "VNB31", "VNC07"},   // Coventry
                                        {"VWA21", "VWB44", "VWC09"}};  // Warwickshire
const char* const kStepDown[] = {"VSD14", "VSD27", "VSD35"};
const char* const kResidential[] = {"VRH02", "VRH15", "VRH23"};
const char* const kNursing[] = {"VNH08", "VNH33"};

const char* const kWithdrawReasons[] = {"family to provide care; discharged home on pathway 0",
                                        "needs met by the existing package of care",
                                        "patient declined support after discussion with the ward"};

int Pw(DischargePathway p) { return static_cast<int>(p) - static_cast<int>(icr::v1::PATHWAY_0); }

// The NHS number walk: stems 999 000 000 + (offset + k * 7919) mod 10^6
// (7919 is prime, so k = 0..999,999 visits every stem once), keeping those
// with a Modulus 11 check digit.
class NhsWalk {
 public:
  explicit NhsWalk(uint64_t seed) : offset_(Mix(seed ^ 0x4E48534E554DULL) % 1000000) {}
  std::string Next() {
    while (true) {
      const uint64_t stem = 999000000 + (offset_ + k_++ * 7919) % 1000000;
      std::string digits = std::to_string(stem);
      int sum = 0;
      for (int i = 0; i < 9; ++i) sum += (digits[static_cast<size_t>(i)] - '0') * (10 - i);
      int check = 11 - sum % 11;
      if (check == 11) check = 0;
      if (check == 10) continue;
      digits.push_back(static_cast<char>('0' + check));
      return digits;
    }
  }

 private:
  uint64_t offset_;
  uint64_t k_ = 0;
};

std::string Base36(uint64_t v, int width) {
  static const char* kDigits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
  std::string s(static_cast<size_t>(width), '0');
  for (int i = width - 1; i >= 0; --i) {
    s[static_cast<size_t>(i)] = kDigits[v % 36];
    v /= 36;
  }
  return s;
}

icr::v1::Date DateAt(int64_t micros) { return DateFromDay(UkLocalDay(micros)); }

// Builds envelopes; numbers messages per run.
class EventFactory {
 public:
  explicit EventFactory(std::string tag) : tag_(std::move(tag)) {}
  const std::string& tag() const { return tag_; }

  void Envelope(CareEvent* e, const char* system, const char* org, icr::v1::CareSetting setting,
                const std::string& nhs, int64_t at, bool workflow, Place place) {
    e->set_source_system_id(system);
    e->set_source_organisation(org);
    e->set_care_setting(setting);
    e->set_source_message_id(std::string(system) + "-" + tag_ + "-" + std::to_string(++messages_));
    e->set_nhs_number(nhs);
    SetTimestamp(e->mutable_occurred_at(), at);
    e->set_priority(workflow ? icr::v1::URGENT : icr::v1::ROUTINE);
    if (workflow) e->set_place(place);
  }

 private:
  std::string tag_;
  uint64_t messages_ = 0;
};

void SetTeam(icr::v1::TeamRef* t, const std::string& org, const std::string& team) {
  t->set_organisation(org);
  t->set_team_code(team);
}

}  // namespace

std::string SimulatedNhsNumber(uint64_t seed, uint64_t n) {
  NhsWalk walk(seed);
  std::string nhs;
  for (uint64_t i = 0; i <= n; ++i) nhs = walk.Next();
  return nhs;
}

// ---------------------------------------------------------------------------
// Simulator
// ---------------------------------------------------------------------------

struct Simulator::Impl {
  enum class Step : uint8_t {
    kDayStart,
    kAdmit,
    kDemographics,
    kGpRegistration,
    kTransfer,
    kEdd,
    kOptimised,
    kReferral,
    kAccepted,
    kForwarded,
    kRequest,
    kAssessment,
    kOffer,
    kDecline,
    kAcceptance,
    kConfirmed,
    kReferralDischarged,
    kDischarge,
    kWithdrawn,
    kReablement,
  };

  // Referral stages after which a withdrawal can come (withdraw_after).
  enum Stage {
    kCreated = 0,
    kAcceptedStage,
    kForwardedStage,
    kRequestedStage,
    kOfferedStage,
    kOfferAcceptedStage,
    kNever
  };

  struct Case {
    std::string nhs;
    int site = 0;
    Place place = icr::v1::COVENTRY;
    std::string encounter_id;
    std::string ward;
    std::string referrer_team;
    int64_t admitted_at = 0;
    int64_t optimised_at = 0;
    int64_t edd_day = 0;
    DischargePathway pathway = icr::v1::PATHWAY_0;  // the planned pathway
    DischargePathway discharged_on = icr::v1::PATHWAY_0;
    bool referral = false;
    bool early = false;  // referred before medically optimised (early discharge planning)
    std::string referral_id, request_id, offer_id;
    ServiceType service = icr::v1::SERVICE_TYPE_UNSPECIFIED;
    std::string provider;
    int offers = 0;
    bool decline_first = false;
    int withdraw_after = kNever;
    int64_t referred_at = 0, accepted_at = 0, offer_at = 0;
  };

  struct Scheduled {
    int64_t at;
    uint64_t seq;
    uint32_t person;
    Step step;
    bool operator>(const Scheduled& o) const { return at != o.at ? at > o.at : seq > o.seq; }
  };

  explicit Impl(const SimulationOptions& o)
      : options(o),
        rng(o.seed ^ static_cast<uint64_t>(o.start_micros) * 0x2545F4914F6CDD1DULL),
        nhs_walk(o.seed),
        factory(
            Base36(Mix(o.seed * 1000003ULL ^ static_cast<uint64_t>(o.start_micros / kSecond)), 6)) {
    stop = o.stop_micros != 0 ? o.stop_micros : o.start_micros + std::max(0, o.days) * kDay;
    if (o.days > 0) Schedule(o.start_micros, 0, Step::kDayStart);
  }

  void Schedule(int64_t at, uint32_t person, Step step) {
    queue.push(Scheduled{at, ++seq, person, step});
  }

  Case& C(uint32_t person) { return *cases[person]; }

  // Moves t into working hours [open, close) UK local time, to the next
  // opening (plus up to 40 minutes) when outside them.
  int64_t Daytime(int64_t t, int open, int close) {
    const int minute = UkLocalMinuteOfDay(t);
    if (minute >= open * 60 && minute < close * 60) return t;
    int64_t day = UkLocalDay(t);
    if (minute >= close * 60) ++day;
    return UkLocalTimeMicros(day, open, 0) + rng.Span(0, 40 * kMinute);
  }

  // A discharge time: daytime; some weekend discharges put off to Monday.
  int64_t DischargeTime(int64_t t) {
    t = Daytime(t, 9, 19);
    const int64_t day = UkLocalDay(t);
    const int dow = DayOfWeek(day);
    if ((dow == 0 || dow == 6) && rng.Chance(options.weekend_discharge_deferral)) {
      const int64_t monday = day + (dow == 6 ? 2 : 1);
      t = UkLocalTimeMicros(monday, 10, 0) + rng.Span(0, 6 * kHour);
    }
    return t;
  }

  int64_t AtLocal(int64_t day, int from_hour, int to_hour) {
    return UkLocalTimeMicros(day, from_hour, 0) +
           rng.Span(0, (to_hour - from_hour) * kHour - kMinute);
  }

  // -------------------------------------------------------------------------

  void StartDay() {
    const int64_t window = options.start_micros + day_index * kDay;
    ++day_index;
    if (day_index < options.days) Schedule(window + kDay, 0, Step::kDayStart);
    // Fewer admissions at weekends, more on Mondays (mean factor 1).
    static constexpr double kWeekday[7] = {0.90, 1.10, 1.04, 1.01, 1.01, 1.02, 0.92};
    const int dow = DayOfWeek(UkLocalDay(window + kDay / 2));
    const double mean = options.admissions_per_day * kWeekday[dow] * (0.96 + 0.08 * rng.Uniform());
    const int64_t n = std::max<int64_t>(0, std::llround(mean));
    // Non-elective admissions by UK local hour (relative; peak 11:00-18:00).
    static constexpr double kHourly[24] = {3, 2, 2, 1.5, 1.5, 1.5, 2, 3, 4, 5, 6, 7,
                                           7, 7, 7, 7,   7,   7,   6, 6, 5, 5, 4, 3};
    for (int64_t i = 0; i < n; ++i) {
      int64_t at;
      do {
        at = window + rng.Span(0, kDay - kSecond);
      } while (!rng.Chance(kHourly[UkLocalMinuteOfDay(at) / 60] / 7.0));
      Schedule(at, NewCase(), Step::kAdmit);
    }
  }

  uint32_t NewCase() {
    auto c = std::make_unique<Case>();
    c->nhs = nhs_walk.Next();
    double u = rng.Uniform();
    c->site = kSiteCount - 1;
    for (int i = 0; i < kSiteCount; ++i) {
      if (u < kSites[i].share) {
        c->site = i;
        break;
      }
      u -= kSites[i].share;
    }
    const Site& site = kSites[c->site];
    u = rng.Uniform();
    c->place = icr::v1::SOUTH_WARWICKSHIRE;
    for (int i = 0; i < 4; ++i) {
      if (u < site.place_weights[i]) {
        c->place = static_cast<Place>(icr::v1::COVENTRY + i);
        break;
      }
      u -= site.place_weights[i];
    }
    const uint32_t index = static_cast<uint32_t>(cases.size());
    c->encounter_id = std::string(site.org) + "-ENC-" + factory.tag() + "-" + std::to_string(index);
    c->ward = "AMU";
    c->referrer_team = "IDT-WARD-" + std::to_string(rng.Between(10, 45));
    if (rng.Chance(options.referral_share)) {
      c->referral = true;
      const double total =
          options.pathway1_weight + options.pathway2_weight + options.pathway3_weight;
      const double w = rng.Uniform() * (total > 0 ? total : 1);
      c->pathway = w < options.pathway1_weight                             ? icr::v1::PATHWAY_1
                   : w < options.pathway1_weight + options.pathway2_weight ? icr::v1::PATHWAY_2
                                                                           : icr::v1::PATHWAY_3;
      c->decline_first = rng.Chance(options.decline_share);
      if (rng.Chance(options.withdrawal_share)) {
        c->withdraw_after = static_cast<int>(rng.Between(kCreated, kOfferAcceptedStage));
      }
    } else {
      c->pathway = icr::v1::PATHWAY_0;
      c->referral = rng.Chance(options.pathway0_referral_share);
    }
    c->discharged_on = c->pathway;
    cases.push_back(std::move(c));
    return index;
  }

  // The envelope of an event from the person's hospital.
  void FromHospital(CareEvent* e, const Case& c, int64_t at, bool workflow) {
    const Site& s = kSites[c.site];
    factory.Envelope(e, s.system, s.org, s.setting, c.nhs, at, workflow, c.place);
  }
  void FromCouncil(CareEvent* e, const Case& c, int64_t at, bool brokerage, bool workflow = true) {
    const Council& k = CouncilOf(c.place);
    factory.Envelope(e, brokerage ? k.brokerage_system : k.social_care_system, k.org,
                     icr::v1::SOCIAL_CARE, c.nhs, at, workflow, c.place);
  }
  std::string HsctTeam(const Case& c) const {
    return std::string("HSCT-") + kSites[c.site].short_name;
  }
  void ToHsct(CareEvent* e, const Case& c) {
    SetTeam(e->mutable_addressee(), CouncilOf(c.place).org, HsctTeam(c));
  }
  void ToBrokerage(CareEvent* e, const Case& c) {
    SetTeam(e->mutable_addressee(), CouncilOf(c.place).org, "BROKERAGE");
  }
  void ToWard(CareEvent* e, const Case& c) {
    SetTeam(e->mutable_addressee(), kSites[c.site].org, c.referrer_team);
  }

  void StatusChange(CareEvent* e, const Case& c, icr::v1::ReferralStatus status,
                    const std::string& reason) {
    auto* s = e->mutable_referral_status_change();
    s->set_referral_id(c.referral_id);
    s->set_status(status);
    if (!reason.empty()) s->set_reason(reason);
  }

  // Schedules a withdrawal instead of the next step when the case is to be
  // withdrawn after `stage`; true if it did.
  bool MaybeWithdraw(uint32_t p, int stage, int64_t now) {
    if (C(p).withdraw_after != stage) return false;
    Schedule(Daytime(now + rng.Span(1 * kHour, 24 * kHour), 8, 20), p, Step::kWithdrawn);
    return true;
  }

  // Produces the event of one step (false for steps without one) and
  // schedules what follows.
  bool Handle(const Scheduled& s, CareEvent* e) {
    if (s.step == Step::kDayStart) {
      StartDay();
      return false;
    }
    const uint32_t p = s.person;
    Case& c = C(p);
    const int64_t t = s.at;
    const Site& site = kSites[c.site];
    switch (s.step) {
      case Step::kDayStart:
        return false;

      case Step::kAdmit: {
        ++stats.admissions;
        c.admitted_at = t;
        FromHospital(e, c, t, false);
        auto* a = e->mutable_admission();
        a->set_encounter_id(c.encounter_id);
        a->mutable_location()->set_site(site.site_codes[rng.Between(0, 1)]);
        a->mutable_location()->set_ward(c.ward);
        a->mutable_attending()->set_professional_id("GMC-" +
                                                    std::to_string(rng.Between(1000000, 9999999)));
        a->set_admission_method(site.setting == icr::v1::COMMUNITY ? "step-up" : "emergency");
        // Medically optimised: pathway 0 after about 1.5 days on average,
        // referred people after about 4 (a long tail).
        const double u = rng.Uniform();
        const int64_t to_optimised = c.pathway == icr::v1::PATHWAY_0 && !c.referral
                                         ? 8 * kHour + static_cast<int64_t>(u * u * 100 * kHour)
                                         : 24 * kHour + static_cast<int64_t>(u * u * 200 * kHour);
        c.optimised_at = Daytime(t + to_optimised, 8, 18);
        if (c.referral && c.pathway != icr::v1::PATHWAY_0 && rng.Chance(0.3)) {
          // Early discharge planning: referred before medically optimised.
          c.early = true;
          const int64_t referral_at = Daytime(t + rng.Span(6 * kHour, 30 * kHour), 8, 20);
          Schedule(referral_at, p, Step::kReferral);
          c.optimised_at = Daytime(referral_at + rng.Span(2 * kHour, 40 * kHour), 8, 18);
        }
        Schedule(c.optimised_at, p, Step::kOptimised);
        if (rng.Chance(options.demographics_share)) {
          Schedule(t + rng.Span(1 * kMinute, 30 * kMinute), p, Step::kDemographics);
        }
        if (rng.Chance(options.gp_registration_share)) {
          Schedule(t + rng.Span(1 * kHour, 48 * kHour), p, Step::kGpRegistration);
        }
        if (rng.Chance(options.transfer_share)) {
          const int64_t latest = std::max<int64_t>(
              2 * kHour, std::min<int64_t>(20 * kHour, c.optimised_at - t - kHour));
          Schedule(t + rng.Span(1 * kHour, latest), p, Step::kTransfer);
        }
        Schedule(t + rng.Span(4 * kHour, 36 * kHour), p, Step::kEdd);
        static constexpr int64_t kWaitDays[4] = {0, 3, 4, 6};
        c.edd_day = UkLocalDay(c.optimised_at) + kWaitDays[Pw(c.pathway)] + rng.Between(0, 1);
        return true;
      }

      case Step::kDemographics: {
        FromHospital(e, c, t, false);
        auto* d = e->mutable_demographics_update();
        d->set_family_name(rng.Pick(kFamilyNames));
        d->add_given_names(rng.Pick(kGivenNames));
        *d->mutable_birth_date() = DateFromDay(civil_days_1925 + rng.Between(0, 45 * 365));
        d->set_gender(rng.Chance(0.55) ? "female" : "male");
        d->set_postcode(kPostcodes[c.place - icr::v1::COVENTRY][rng.Between(0, 3)]);
        d->set_place(c.place);
        d->set_local_authority(CouncilOf(c.place).local_authority);
        d->set_commissioner("QWU");
        return true;
      }

      case Step::kGpRegistration: {
        const bool coventry = c.place == icr::v1::COVENTRY;
        char practice[8];
        std::snprintf(practice, sizeof(practice), "%s%03d", coventry ? "M86" : "M84",
                      static_cast<int>(rng.Between(1, coventry ? 40 : 60)));
        std::string system = std::string("gp-emis-") + (coventry ? "m86" : "m84") + (practice + 3);
        factory.Envelope(e, system.c_str(), practice, icr::v1::GP, c.nhs, t, false, c.place);
        auto* g = e->mutable_gp_registration();
        g->set_practice(practice);
        *g->mutable_registered_on() = DateAt(t);
        return true;
      }

      case Step::kTransfer: {
        FromHospital(e, c, t, false);
        auto* tr = e->mutable_transfer();
        tr->set_encounter_id(c.encounter_id);
        tr->mutable_from()->set_site(site.site_codes[0]);
        tr->mutable_from()->set_ward(c.ward);
        c.ward = rng.Pick(kWards);
        tr->mutable_to()->set_site(site.site_codes[0]);
        tr->mutable_to()->set_ward(c.ward);
        return true;
      }

      case Step::kEdd: {
        FromHospital(e, c, t, false);
        auto* d = e->mutable_expected_discharge_date_set();
        d->set_encounter_id(c.encounter_id);
        *d->mutable_expected_discharge_date() = DateFromDay(std::max(c.edd_day, UkLocalDay(t)));
        return true;
      }

      case Step::kOptimised: {
        FromHospital(e, c, t, false);
        auto* m = e->mutable_medically_optimised();
        m->set_encounter_id(c.encounter_id);
        *m->mutable_discharge_ready_date() = DateAt(t);
        m->mutable_location()->set_site(site.site_codes[0]);
        m->mutable_location()->set_ward(c.ward);
        if (c.early) {
          // The referral is under way already.
        } else if (c.referral) {
          Schedule(Daytime(t + rng.Span(15 * kMinute, 4 * kHour), 8, 20), p, Step::kReferral);
        } else {
          Schedule(DischargeTime(t + rng.Span(2 * kHour, 30 * kHour)), p, Step::kDischarge);
        }
        return true;
      }

      case Step::kReferral: {
        ++stats.referrals;
        ++stats.referrals_by_pathway[static_cast<size_t>(Pw(c.pathway))];
        c.referred_at = t;
        c.referral_id =
            std::string(site.short_name) + "-DR-" + factory.tag() + "-" + std::to_string(p);
        FromHospital(e, c, t, true);
        ToHsct(e, c);
        auto* r = e->mutable_discharge_referral();
        r->set_referral_id(c.referral_id);
        r->set_pathway(c.pathway);
        SetTeam(r->mutable_referrer(), site.org, c.referrer_team);
        auto* n = r->mutable_needs();
        n->set_dementia(rng.Chance(0.2));
        n->set_non_weight_bearing(rng.Chance(0.08));
        n->set_safety_between_calls(c.pathway == icr::v1::PATHWAY_2 && rng.Chance(0.5));
        n->set_equipment_needed(rng.Chance(0.3));
        n->set_telecare(rng.Chance(0.25));
        n->set_carers_per_call(
            c.pathway == icr::v1::PATHWAY_0 ? 0 : static_cast<int32_t>(rng.Between(1, 2)));
        n->set_summary(c.pathway == icr::v1::PATHWAY_0
                           ? "Voluntary sector support at home: shopping and a safe-and-well check."
                           : "Needs help with washing, dressing and meals; lives alone.");
        *r->mutable_expected_discharge_date() = DateFromDay(std::max(c.edd_day, UkLocalDay(t)));
        if (!c.early) *r->mutable_discharge_ready_date() = DateAt(c.optimised_at);
        r->set_encounter_id(c.encounter_id);
        r->set_place(c.place);
        if (!MaybeWithdraw(p, kCreated, t)) {
          Schedule(t + (c.pathway == icr::v1::PATHWAY_0 ? rng.Span(10 * kMinute, 60 * kMinute)
                                                        : rng.Span(5 * kMinute, 15 * kMinute)),
                   p, Step::kAccepted);
        }
        return true;
      }

      case Step::kAccepted: {
        c.accepted_at = t;
        FromCouncil(e, c, t, false);
        ToWard(e, c);
        StatusChange(e, c, icr::v1::ACCEPTED, "management plan agreed with the ward");
        if (c.pathway == icr::v1::PATHWAY_0) {
          Schedule(DischargeTime(t + rng.Span(2 * kHour, 24 * kHour)), p,
                   Step::kReferralDischarged);
        } else if (!MaybeWithdraw(p, kAcceptedStage, t)) {
          // Coventry: about 31 (pathway 1) and 34 (pathway 2) minutes from
          // referral to brokerage.
          static constexpr int64_t kLo[4] = {0, 22, 25, 35}, kHi[4] = {0, 40, 43, 75};
          const int pw = Pw(c.pathway);
          const int64_t at = c.referred_at + rng.Span(kLo[pw] * kMinute, kHi[pw] * kMinute);
          Schedule(std::max(at, t + kMinute), p, Step::kForwarded);
        }
        return true;
      }

      case Step::kForwarded: {
        FromCouncil(e, c, t, false);
        ToBrokerage(e, c);
        StatusChange(e, c, icr::v1::FORWARDED_TO_BROKERAGE, "");
        if (!MaybeWithdraw(p, kForwardedStage, t)) {
          Schedule(t + rng.Span(5 * kMinute, 25 * kMinute), p, Step::kRequest);
        }
        if (c.pathway == icr::v1::PATHWAY_3 ||
            (c.pathway == icr::v1::PATHWAY_2 && rng.Chance(0.3))) {
          Schedule(Daytime(t + rng.Span(2 * kHour, 20 * kHour), 9, 17), p, Step::kAssessment);
        }
        return true;
      }

      case Step::kRequest: {
        const Council& k = CouncilOf(c.place);
        c.request_id = std::string(k.org) + "-PR-" + factory.tag() + "-" + std::to_string(p);
        FromCouncil(e, c, t, false);
        ToBrokerage(e, c);
        auto* r = e->mutable_placement_request();
        r->set_request_id(c.request_id);
        r->set_referral_id(c.referral_id);
        r->set_place(c.place);
        switch (c.pathway) {
          case icr::v1::PATHWAY_1:
            c.service = icr::v1::HOME_SUPPORT;
            r->set_calls_per_day(static_cast<int32_t>(rng.Between(1, 4)));
            r->set_hours_per_week(3.5 * static_cast<double>(rng.Between(2, 8)));
            break;
          case icr::v1::PATHWAY_2:
            c.service = icr::v1::STEP_DOWN_BED;
            break;
          default:
            c.service = rng.Chance(0.4) ? icr::v1::NURSING : icr::v1::RESIDENTIAL;
            break;
        }
        r->set_service_type(c.service);
        *r->mutable_start_date() = DateFromDay(std::max(c.edd_day, UkLocalDay(t) + 1));
        r->mutable_needs()->set_carers_per_call(
            c.pathway == icr::v1::PATHWAY_1 ? static_cast<int32_t>(rng.Between(1, 2)) : 0);
        r->mutable_needs()->set_dementia(rng.Chance(0.2));
        r->set_contact("ward " + c.ward + ", ext " + std::to_string(rng.Between(2000, 5999)));
        if (!MaybeWithdraw(p, kRequestedStage, t)) Schedule(OfferTime(c, t), p, Step::kOffer);
        return true;
      }

      case Step::kAssessment: {
        FromCouncil(e, c, t, false, /*workflow=*/false);
        auto* a = e->mutable_care_act_assessment();
        a->set_assessment_id(std::string(CouncilOf(c.place).org) + "-CAA-" + factory.tag() + "-" +
                             std::to_string(p));
        a->set_outcome(rng.Chance(0.9) ? "eligible" : "deferred");
        *a->mutable_assessed_on() = DateAt(t);
        return true;
      }

      case Step::kOffer: {
        ++stats.offers;
        ++c.offers;
        c.offer_at = t;
        const Council& k = CouncilOf(c.place);
        c.offer_id = std::string(k.org) + "-OF-" + factory.tag() + "-" + std::to_string(p) + "-" +
                     std::to_string(c.offers);
        c.provider = PickProvider(c);
        FromCouncil(e, c, t, true);
        ToHsct(e, c);
        auto* o = e->mutable_placement_offer();
        o->set_offer_id(c.offer_id);
        o->set_request_id(c.request_id);
        o->set_provider(c.provider);
        *o->mutable_start_date() = DateFromDay(UkLocalDay(t) + 2);
        o->set_provider_name(ProviderName(c));
        if (c.decline_first && c.offers == 1) {
          Schedule(t + rng.Span(1 * kHour, 4 * kHour), p, Step::kDecline);
        } else if (!MaybeWithdraw(p, kOfferedStage, t)) {
          Schedule(t + rng.Span(30 * kMinute, 3 * kHour), p, Step::kAcceptance);
        }
        return true;
      }

      case Step::kDecline: {
        ++stats.declines;
        FromCouncil(e, c, t, false);
        ToBrokerage(e, c);
        auto* d = e->mutable_placement_decline();
        d->set_offer_id(c.offer_id);
        d->set_request_id(c.request_id);
        d->set_reason("family prefer a provider nearer home");
        Schedule(Daytime(t + rng.Span(4 * kHour, 24 * kHour), 8, 20), p, Step::kOffer);
        return true;
      }

      case Step::kAcceptance: {
        FromCouncil(e, c, t, false);
        ToBrokerage(e, c);
        auto* a = e->mutable_placement_acceptance();
        a->set_offer_id(c.offer_id);
        a->set_request_id(c.request_id);
        if (!MaybeWithdraw(p, kOfferAcceptedStage, t)) {
          Schedule(t + rng.Span(1 * kHour, 4 * kHour), p, Step::kConfirmed);
        }
        return true;
      }

      case Step::kConfirmed: {
        FromCouncil(e, c, t, true);
        ToWard(e, c);
        StatusChange(e, c, icr::v1::SERVICE_CONFIRMED, "provider confirmed the start date");
        // Coventry: about 2 days from the offer to discharge for home
        // support, 3 for a bed (domain.md section 3.3).
        const double u = rng.Uniform();
        int days;
        switch (c.pathway) {
          case icr::v1::PATHWAY_1:
            days = u < 0.1 ? 1 : u < 0.8 ? 2 : 3;
            break;
          case icr::v1::PATHWAY_2:
            days = u < 0.15 ? 2 : u < 0.8 ? 3 : 4;
            break;
          default:
            days = u < 0.5 ? 3 : u < 0.85 ? 4 : 5;
            break;
        }
        const int64_t at = AtLocal(UkLocalDay(c.offer_at) + days, 10, 17);
        Schedule(DischargeTime(std::max({at, t + 30 * kMinute, c.optimised_at + 2 * kHour})), p,
                 Step::kReferralDischarged);
        return true;
      }

      case Step::kReferralDischarged: {
        FromHospital(e, c, t, true);
        ToHsct(e, c);
        StatusChange(e, c, icr::v1::DISCHARGED, "");
        Schedule(t + rng.Span(1 * kMinute, 10 * kMinute), p, Step::kDischarge);
        if (c.pathway == icr::v1::PATHWAY_1 && rng.Chance(0.6)) {
          Schedule(t + rng.Span(2 * kHour, 8 * kHour), p, Step::kReablement);
          reablement_pending.insert(p);
        }
        return true;
      }

      case Step::kDischarge: {
        ++stats.discharges;
        FromHospital(e, c, t, false);
        auto* d = e->mutable_discharge();
        d->set_encounter_id(c.encounter_id);
        d->set_pathway(c.discharged_on);
        switch (c.discharged_on) {
          case icr::v1::PATHWAY_1:
            d->set_destination(icr::v1::USUAL_RESIDENCE_WITH_SUPPORT);
            break;
          case icr::v1::PATHWAY_2:
            d->set_destination(icr::v1::STEP_DOWN_BED_DESTINATION);
            d->set_destination_organisation(c.provider);
            break;
          case icr::v1::PATHWAY_3:
            d->set_destination(c.service == icr::v1::NURSING ? icr::v1::CARE_HOME_NURSING
                                                             : icr::v1::CARE_HOME_RESIDENTIAL);
            d->set_destination_organisation(c.provider);
            break;
          default:
            d->set_destination(icr::v1::USUAL_RESIDENCE);
            break;
        }
        if (reablement_pending.count(p) == 0) cases[p].reset();  // the case is over
        return true;
      }

      case Step::kWithdrawn: {
        ++stats.withdrawals;
        FromHospital(e, c, t, true);
        ToHsct(e, c);
        StatusChange(e, c, icr::v1::WITHDRAWN, rng.Pick(kWithdrawReasons));
        c.discharged_on = icr::v1::PATHWAY_0;
        Schedule(
            DischargeTime(std::max(t + rng.Span(4 * kHour, 48 * kHour), c.optimised_at + kHour)), p,
            Step::kDischarge);
        return true;
      }

      case Step::kReablement: {
        FromCouncil(e, c, t, false, /*workflow=*/false);
        auto* r = e->mutable_reablement_start();
        r->set_episode_id(std::string(CouncilOf(c.place).org) + "-RE-" + factory.tag() + "-" +
                          std::to_string(p));
        *r->mutable_start_date() = DateAt(t);
        r->set_provider(c.provider);
        reablement_pending.erase(p);
        cases[p].reset();  // the case is over (its Discharge came first)
        return true;
      }
    }
    return false;
  }

  int64_t OfferTime(const Case& c, int64_t t) {
    const int64_t day = UkLocalDay(t);
    switch (c.pathway) {
      case icr::v1::PATHWAY_1: {
        // Same day when brokerage has the afternoon; else next morning.
        const int minute = UkLocalMinuteOfDay(t);
        const int room = 20 * 60 - 5 - minute;  // minutes to 19:55
        if (room >= 60) return t + rng.Span(45 * kMinute, std::min(240, room) * kMinute);
        return AtLocal(day + 1, 9, 12);
      }
      case icr::v1::PATHWAY_2:
        return AtLocal(day + rng.Between(1, 2), 9, 17);
      default:
        return AtLocal(day + rng.Between(2, 5), 9, 17);
    }
  }

  std::string PickProvider(Case& c) {
    switch (c.service) {
      case icr::v1::HOME_SUPPORT:
        return kHomeSupport[c.place == icr::v1::COVENTRY ? 0 : 1][rng.Between(0, 2)];
      case icr::v1::STEP_DOWN_BED:
        return rng.Pick(kStepDown);
      case icr::v1::NURSING:
        return rng.Pick(kNursing);
      default:
        return rng.Pick(kResidential);
    }
  }

  static std::string ProviderName(const Case& c) {
    switch (c.service) {
      case icr::v1::HOME_SUPPORT:
        return "Home support provider " + c.provider;
      case icr::v1::STEP_DOWN_BED:
        return "Step-down beds " + c.provider;
      case icr::v1::NURSING:
        return "Nursing home " + c.provider;
      default:
        return "Residential home " + c.provider;
    }
  }

  bool Next(CareEvent* out) {
    while (!queue.empty()) {
      const Scheduled s = queue.top();
      if (s.at >= stop) {
        queue = decltype(queue)();
        return false;
      }
      queue.pop();
      out->Clear();
      if (s.step != Step::kDayStart && !cases[s.person]) continue;  // defensive
      if (Handle(s, out)) {
        ++stats.events;
        return true;
      }
    }
    return false;
  }

  SimulationOptions options;
  Rng rng;
  NhsWalk nhs_walk;
  EventFactory factory;
  int64_t stop = 0;
  int day_index = 0;
  uint64_t seq = 0;
  const int64_t civil_days_1925 = icr::civil::DaysFromCivil(1925, 1, 1);
  std::vector<std::unique_ptr<Case>> cases;
  std::priority_queue<Scheduled, std::vector<Scheduled>, std::greater<Scheduled>> queue;
  // Cases whose ReablementStart (hours after the Discharge) is still to come.
  std::set<uint32_t> reablement_pending;
  SimulationStats stats;
};

Simulator::Simulator(const SimulationOptions& options) : impl_(std::make_unique<Impl>(options)) {}
Simulator::~Simulator() = default;
bool Simulator::Next(icr::v1::CareEvent* out) { return impl_->Next(out); }
const SimulationStats& Simulator::stats() const { return impl_->stats; }
int64_t Simulator::start_micros() const { return impl_->options.start_micros; }
int64_t Simulator::stop_micros() const { return impl_->stop; }
int64_t Simulator::PeekMicros() {
  return impl_->queue.empty() ? impl_->stop : std::min(impl_->queue.top().at, impl_->stop);
}

// ---------------------------------------------------------------------------
// Exact flow scenarios
// ---------------------------------------------------------------------------

namespace {
constexpr int64_t Day(int y, int m, int d) { return icr::civil::DaysFromCivil(y, m, d); }

// The hospital whose social care team serves a Place in the scenarios.
const Site& SiteFor(Place place) {
  switch (place) {
    case icr::v1::WARWICKSHIRE_NORTH:
      return kSites[1];
    case icr::v1::SOUTH_WARWICKSHIRE:
      return kSites[2];
    default:
      return kSites[0];
  }
}
}  // namespace

FlowScenario CoventryTable2022Scenario(int count) {
  FlowScenario scenario;
  scenario.place = icr::v1::COVENTRY;
  auto period = [&](int64_t first_day, int64_t last_day, double pw1_minutes, double pw2_minutes,
                    int pw2_days_to_offer) {
    FlowPeriod p;
    p.from_micros = UkLocalMidnightMicros(first_day);
    p.to_micros = UkLocalMidnightMicros(last_day + 1);
    PathwayTarget pw1;
    pw1.pathway = icr::v1::PATHWAY_1;
    pw1.count = count;
    pw1.minutes_referral_to_brokerage = pw1_minutes;
    pw1.days_brokerage_to_offer = 0;
    pw1.days_offer_to_discharge = 2;
    PathwayTarget pw2 = pw1;
    pw2.pathway = icr::v1::PATHWAY_2;
    pw2.minutes_referral_to_brokerage = pw2_minutes;
    pw2.days_brokerage_to_offer = pw2_days_to_offer;
    pw2.days_offer_to_discharge = 3;
    p.pathways = {pw1, pw2};
    scenario.periods.push_back(p);
  };
  period(Day(2022, 5, 23), Day(2022, 6, 26), 31, 34, 1);
  period(Day(2022, 6, 27), Day(2022, 7, 31), 29, 32, 2);
  return scenario;
}

std::vector<icr::v1::CareEvent> BuildFlowScenario(const FlowScenario& scenario) {
  const Place place =
      scenario.place == icr::v1::PLACE_UNSPECIFIED ? icr::v1::COVENTRY : scenario.place;
  const Council& council = CouncilOf(place);
  const Site& site = SiteFor(place);
  EventFactory factory("FLOW" + Base36(Mix(scenario.seed), 4));
  NhsWalk walk(scenario.seed);
  std::vector<std::pair<int64_t, CareEvent>> events;  // (occurred_at, event)
  uint64_t serial = 0;

  for (size_t pi = 0; pi < scenario.periods.size(); ++pi) {
    const FlowPeriod& period = scenario.periods[pi];
    int64_t first_day = UkLocalDay(period.from_micros);
    if (UkLocalTimeMicros(first_day, 8, 0) < period.from_micros) ++first_day;
    int64_t last_day = UkLocalDay(period.to_micros - 1);
    if (UkLocalTimeMicros(last_day, 18, 0) >= period.to_micros) --last_day;

    for (const PathwayTarget& target : period.pathways) {
      const int span = target.days_brokerage_to_offer + target.days_offer_to_discharge;
      const int64_t usable = std::max<int64_t>(1, last_day - span - first_day + 1);
      for (int i = 0; i < target.count; ++i) {
        const uint64_t n = ++serial;
        const std::string nhs = walk.Next();
        const std::string encounter =
            std::string(site.org) + "-ENC-" + factory.tag() + "-" + std::to_string(n);
        const std::string referral_id =
            std::string(site.short_name) + "-DR-" + factory.tag() + "-" + std::to_string(n);
        const std::string request_id =
            std::string(council.org) + "-PR-" + factory.tag() + "-" + std::to_string(n);
        const std::string offer_id =
            std::string(council.org) + "-OF-" + factory.tag() + "-" + std::to_string(n);
        const std::string ward_team = "IDT-WARD-" + std::to_string(10 + n % 30);
        const std::string hsct = std::string("HSCT-") + site.short_name;

        // Spread over the period's days (weekends too), 08:30-11:00.
        const int64_t day =
            first_day + (static_cast<int64_t>(i) * 7 + static_cast<int64_t>(pi)) % usable;
        const int64_t created = UkLocalTimeMicros(day, 8, 30) + (i % 6) * 30 * kMinute;
        // Symmetric pairs around the target: the mean and median are exact.
        int offset = 0;
        if (target.spread_minutes > 0 && !(target.count % 2 == 1 && i == target.count - 1)) {
          offset = ((i / 2) % target.spread_minutes + 1) * (i % 2 == 0 ? 1 : -1);
        }
        const int64_t minutes_micros =
            std::llround((target.minutes_referral_to_brokerage + offset) * 60e6);
        const int64_t forwarded = created + minutes_micros;
        const int64_t accepted = created + minutes_micros / 3;
        const int64_t request = forwarded + 5 * kMinute;
        const int64_t offer_day = UkLocalDay(forwarded) + target.days_brokerage_to_offer;
        const int64_t offer = std::max(UkLocalTimeMicros(offer_day, 14, 0), request + 30 * kMinute);
        const int64_t acceptance = offer + kHour;
        const int64_t confirmed = offer + 2 * kHour;
        const int64_t discharged =
            std::max(UkLocalTimeMicros(offer_day + target.days_offer_to_discharge, 11, 0),
                     confirmed + 30 * kMinute);

        auto add = [&](int64_t at, bool from_council, bool brokerage, bool workflow) -> CareEvent* {
          events.emplace_back(at, CareEvent());
          CareEvent* e = &events.back().second;
          if (from_council) {
            factory.Envelope(e, brokerage ? council.brokerage_system : council.social_care_system,
                             council.org, icr::v1::SOCIAL_CARE, nhs, at, workflow, place);
          } else {
            factory.Envelope(e, site.system, site.org, site.setting, nhs, at, workflow, place);
          }
          return e;
        };
        auto status = [&](int64_t at, bool from_council, bool brokerage, icr::v1::ReferralStatus st,
                          const std::string& to_org, const std::string& to_team) {
          CareEvent* e = add(at, from_council, brokerage, true);
          SetTeam(e->mutable_addressee(), to_org, to_team);
          auto* s = e->mutable_referral_status_change();
          s->set_referral_id(referral_id);
          s->set_status(st);
        };

        CareEvent* e = add(UkLocalTimeMicros(day - 2, 14, 0), false, false, false);
        e->mutable_admission()->set_encounter_id(encounter);
        e->mutable_admission()->mutable_location()->set_site(site.site_codes[0]);
        e->mutable_admission()->mutable_location()->set_ward("AMU");
        e->mutable_admission()->set_admission_method("emergency");

        e = add(created - 45 * kMinute, false, false, false);
        e->mutable_medically_optimised()->set_encounter_id(encounter);
        *e->mutable_medically_optimised()->mutable_discharge_ready_date() = DateAt(created);

        e = add(created, false, false, true);
        SetTeam(e->mutable_addressee(), council.org, hsct);
        auto* r = e->mutable_discharge_referral();
        r->set_referral_id(referral_id);
        r->set_pathway(target.pathway);
        SetTeam(r->mutable_referrer(), site.org, ward_team);
        r->mutable_needs()->set_carers_per_call(target.pathway == icr::v1::PATHWAY_1 ? 1 : 0);
        *r->mutable_discharge_ready_date() = DateAt(created);
        r->set_encounter_id(encounter);
        r->set_place(place);

        status(accepted, true, false, icr::v1::ACCEPTED, site.org, ward_team);
        status(forwarded, true, false, icr::v1::FORWARDED_TO_BROKERAGE, council.org, "BROKERAGE");

        e = add(request, true, false, true);
        SetTeam(e->mutable_addressee(), council.org, "BROKERAGE");
        auto* q = e->mutable_placement_request();
        q->set_request_id(request_id);
        q->set_referral_id(referral_id);
        q->set_place(place);
        *q->mutable_start_date() = DateFromDay(offer_day + target.days_offer_to_discharge);
        ServiceType service = icr::v1::RESIDENTIAL;
        if (target.pathway == icr::v1::PATHWAY_1) {
          service = icr::v1::HOME_SUPPORT;
          q->set_hours_per_week(14);
          q->set_calls_per_day(2);
        } else if (target.pathway == icr::v1::PATHWAY_2) {
          service = icr::v1::STEP_DOWN_BED;
        }
        q->set_service_type(service);
        const std::string provider = service == icr::v1::HOME_SUPPORT    ? "VNA12"
                                     : service == icr::v1::STEP_DOWN_BED ? "VSD14"
                                                                         : "VRH02";

        e = add(offer, true, true, true);
        SetTeam(e->mutable_addressee(), council.org, hsct);
        auto* o = e->mutable_placement_offer();
        o->set_offer_id(offer_id);
        o->set_request_id(request_id);
        o->set_provider(provider);
        *o->mutable_start_date() = DateFromDay(offer_day + target.days_offer_to_discharge);

        e = add(acceptance, true, false, true);
        SetTeam(e->mutable_addressee(), council.org, "BROKERAGE");
        e->mutable_placement_acceptance()->set_offer_id(offer_id);
        e->mutable_placement_acceptance()->set_request_id(request_id);

        status(confirmed, true, true, icr::v1::SERVICE_CONFIRMED, site.org, ward_team);
        status(discharged, false, false, icr::v1::DISCHARGED, council.org, hsct);

        e = add(discharged + kMinute, false, false, false);
        auto* d = e->mutable_discharge();
        d->set_encounter_id(encounter);
        d->set_pathway(target.pathway);
        d->set_destination(
            target.pathway == icr::v1::PATHWAY_1   ? icr::v1::USUAL_RESIDENCE_WITH_SUPPORT
            : target.pathway == icr::v1::PATHWAY_2 ? icr::v1::STEP_DOWN_BED_DESTINATION
                                                   : icr::v1::CARE_HOME_RESIDENTIAL);
        if (target.pathway != icr::v1::PATHWAY_1) d->set_destination_organisation(provider);
      }
    }
  }
  std::stable_sort(events.begin(), events.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<CareEvent> out;
  out.reserve(events.size());
  for (auto& [at, event] : events) out.push_back(std::move(event));
  return out;
}

}  // namespace icr::broker::workflow
