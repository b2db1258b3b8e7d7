// A seeded generator of realistic Coventry & Warwickshire care-event streams
// (domain.md sections 1, 3 and 7), for `icrctl simulate`, tests and
// benchmarks.
//
// Simulator is a small discrete-event simulation: non-elective admissions
// (about 260 a day) at UHCW (RKB), George Eliot (RLT), South Warwickshire
// (RJC) and CWPT's community beds (RYG); ward transfers, expected discharge
// dates, medically optimised; half of the people go home simply (pathway 0,
// a few with a pathway 0 referral), the rest are referred to the hospital
// social care team of their Place's council (CCC for Coventry, WCC for the
// three Warwickshire Places) on pathway 1, 2 or 3 and follow the referral
// lifecycle (docs/workflow.md):
//
//   DischargeReferral (CREATED) -> ReferralStatusChange ACCEPTED
//   -> FORWARDED_TO_BROKERAGE (about 30 minutes after the referral)
//   -> PlacementRequest (PLACEMENT_REQUESTED) -> PlacementOffer (OFFER_MADE;
//      same day for pathway 1, 1-2 days for pathway 2, 2-5 for pathway 3)
//   -> PlacementAcceptance (OFFER_ACCEPTED), or PlacementDecline (back to
//      PLACEMENT_REQUESTED) and a second offer
//   -> ReferralStatusChange SERVICE_CONFIRMED
//   -> ReferralStatusChange DISCHARGED (2-3 days after the offer) and an
//      HL7-style Discharge;
//   WITHDRAWN from any open state for a few; pathway 0 referrals go
//   CREATED -> ACCEPTED -> DISCHARGED.
// Also demographics updates, GP registrations, Care Act assessments and
// reablement starts for a share of people. Every event passes the broker's
// validation (broker/validation.h) as long as it is published no earlier
// than its occurred_at minus 5 minutes; workflow events (107-113) are URGENT
// and carry envelope.place, others are ROUTINE. NHS numbers come only from
// the test range 999 000 0000 - 999 999 9999.
//
// Events come out in occurred_at order (ties in the order they were
// scheduled), so each person's events are in time order. The same options
// give the same events, bit for bit. Ids (source_message_id, referral,
// encounter, request and offer ids) include a tag of (seed, start), so a
// run with another seed or start does not collide with an earlier one, and
// re-publishing the same run is recognised by the broker as duplicates.
//
// A Simulator is not thread-safe; use one per thread. BuildFlowScenario is a
// pure function.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "icr/v1/events.pb.h"

namespace icr::broker::workflow {

struct SimulationOptions {
  // Seed of every random choice. Default: 1.
  uint64_t seed = 1;
  // Start of the simulated time (UTC micros since the epoch). Required.
  int64_t start_micros = 0;
  // Days during which people are admitted. Default: 1.
  int days = 1;
  // Mean admissions a day over all sites (domain.md section 7: about 260).
  // Days vary by weekday (fewer at weekends) and a little at random, within
  // +-15%. Default: 260.
  double admissions_per_day = 260;
  // No event at or after this instant; lifecycles still running then are
  // cut off. 0: start + days. Default: 0.
  int64_t stop_micros = 0;
  // Share of admissions discharged on pathway 1, 2 or 3 with a referral to
  // social care; the rest go home on pathway 0. Default: 0.5.
  double referral_share = 0.5;
  // Relative weights of pathways 1, 2 and 3 among referrals.
  // Default: 0.6, 0.25, 0.15.
  double pathway1_weight = 0.60;
  double pathway2_weight = 0.25;
  double pathway3_weight = 0.15;
  // Share of pathway 0 discharges that have a pathway 0 referral
  // (voluntary-sector support, no personal care). Default: 0.1.
  double pathway0_referral_share = 0.1;
  // Share of pathway 1-3 referrals whose first offer is declined (a second
  // offer follows). Default: 0.06.
  double decline_share = 0.06;
  // Share of referrals withdrawn (the person then goes home on pathway 0).
  // Default: 0.03.
  double withdrawal_share = 0.03;
  // Shares of people with a demographics update at admission, a new GP
  // registration, a ward transfer. Defaults: 0.3, 0.08, 0.4.
  double demographics_share = 0.3;
  double gp_registration_share = 0.08;
  double transfer_share = 0.4;
  // Share of discharges that would fall on a Saturday or Sunday and are put
  // off to the Monday (weekend discharges run below weekday ones; HICM
  // wants at least 60%). Default: 0.35.
  double weekend_discharge_deferral = 0.35;
};

struct SimulationStats {
  uint64_t events = 0;  // events returned by Next
  uint64_t admissions = 0;
  uint64_t referrals = 0;                          // discharge referrals, all pathways
  std::array<uint64_t, 4> referrals_by_pathway{};  // PATHWAY_0..PATHWAY_3
  uint64_t offers = 0;
  uint64_t declines = 0;
  uint64_t withdrawals = 0;
  uint64_t discharges = 0;  // Discharge (HL7 A03) events
};

class Simulator {
 public:
  explicit Simulator(const SimulationOptions& options);
  ~Simulator();
  Simulator(const Simulator&) = delete;
  Simulator& operator=(const Simulator&) = delete;

  // The next event in occurred_at order into *out (cleared first). False
  // when the simulation is over.
  bool Next(icr::v1::CareEvent* out);

  const SimulationStats& stats() const;
  int64_t start_micros() const;
  int64_t stop_micros() const;  // no event at or after this
  // occurred_at of the next event Next would return, or stop_micros() when
  // there is none (for progress and pacing).
  int64_t PeekMicros();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The n-th NHS number of the walk for `seed`: test range only (999 000 0000
// - 999 999 9999), Modulus 11 valid, distinct for the first 900,000 n.
// Walks from the start: O(n); the Simulator keeps its own cursor.
std::string SimulatedNhsNumber(uint64_t seed, uint64_t n);

// ---------------------------------------------------------------------------
// Exact flow scenarios: event streams whose flow metrics (metrics.h) are
// known in advance, e.g. Coventry's 2022/23 table (domain.md section 3.3).
// ---------------------------------------------------------------------------

struct PathwayTarget {
  icr::v1::DischargePathway pathway = icr::v1::PATHWAY_1;
  // Referrals on this pathway in the period; each runs its whole lifecycle
  // (created, forwarded, offer, discharge) inside the period.
  int count = 10;
  // Minutes from referral to forwarding to brokerage: the mean and the
  // median over the period are exactly this; single referrals spread by up
  // to +-spread_minutes in symmetric pairs. REQUIRES: at least
  // spread_minutes + 10 and at most 120.
  double minutes_referral_to_brokerage = 30;
  int spread_minutes = 4;
  // UK calendar days from forwarding to the offer, and from the offer to
  // the discharge (every referral exactly these).
  int days_brokerage_to_offer = 0;
  int days_offer_to_discharge = 2;
};

struct FlowPeriod {
  int64_t from_micros = 0;  // [from, to), as ComputeFlowMetrics takes it
  int64_t to_micros = 0;    // REQUIRES: long enough for every lifecycle (+2 days)
  std::vector<PathwayTarget> pathways;
};

struct FlowScenario {
  uint64_t seed = 1;  // NHS numbers and ids
  icr::v1::Place place = icr::v1::COVENTRY;
  std::vector<FlowPeriod> periods;
};

// Coventry BCF plan 2022/23 (002:180-188): 23/05-26/06/2022 and
// 27/06-31/07/2022 (UK dates, whole days), pathway 1 (31 and 29 minutes,
// 0 and 0 days to an offer, 2 and 2 days to discharge) and pathway 2 (34 and
// 32 minutes, 1 and 2 days, 3 and 3 days), `count` referrals of each.
FlowScenario CoventryTable2022Scenario(int count = 20);

// The events of the scenario's referral lifecycles (admission, medically
// optimised, referral, accepted, forwarded, placement request, offer,
// acceptance, service confirmed, discharged, HL7 discharge), sorted by
// occurred_at. All pass validation at any time after the periods.
std::vector<icr::v1::CareEvent> BuildFlowScenario(const FlowScenario& scenario);

}  // namespace icr::broker::workflow
