// Flow metrics of the discharge process (domain.md sections 3.3, 3.5 and 4):
// how long each step of a referral took, per D2A pathway, over a period, as
// Coventry's BCF plan 2022/23 reports them (minutes from referral into adult
// social care to brokerage, days from brokerage to a service offer, days from
// the offer to the actual discharge), with the HICM weekend-discharge ratio,
// the people medically optimised and still waiting, and open escalations.
//
// ComputeFlowMetrics is a pure function over folded Referral records (the
// broker's GetFlowMetrics feeds it the referrals of its store); it reads no
// clock and keeps no state, so it is safe from any thread.
//
// Definitions (the period is [from, to); "in the period" means from <= t < to):
//
//   * Place filter first: with place != PLACE_UNSPECIFIED a referral counts
//     only when referral.place == place; PLACE_UNSPECIFIED counts every one.
//   * pathways: exactly four PathwayFlow entries, PATHWAY_0..PATHWAY_3 in
//     that order. A referral counts in the entry of its current pathway;
//     referrals with DISCHARGE_PATHWAY_UNSPECIFIED are in no entry (they
//     still count in awaiting_discharge and open_escalations).
//   * minutes_referral_to_brokerage: forwarded_at - created_at, in minutes
//     (fractional), over referrals whose forwarded_at is in the period.
//   * days_brokerage_to_offer: UK calendar days from forwarded_at to
//     offer_made_at (the UK local date of the offer minus the UK local date
//     of forwarding; same day = 0, as the Coventry table counts them), over
//     referrals whose offer_made_at is in the period. offer_made_at is the
//     latest offer (after a decline, the second one).
//   * days_offer_to_discharge: UK calendar days from offer_made_at to
//     discharged_at, over referrals discharged in the period.
//   * days_referral_to_discharge: UK calendar days from created_at to
//     discharged_at, over referrals discharged in the period.
//     Each duration needs both of its timestamps set; a referral missing one
//     (e.g. a pathway 0 referral has no offer) is left out of that duration.
//   * DurationStat: count, mean, median; the median of an even count is the
//     mean of the two middle values; count 0 gives mean 0 and median 0.
//   * referrals: created_at in the period. discharges: discharged_at in the
//     period, split into weekend_discharges (Saturday or Sunday) and
//     weekday_discharges by the UK local day of the week of discharged_at.
//   * weekend_to_weekday_ratio (HICM: at least 0.6): over all four pathways,
//       (weekend discharges / weekend days) / (weekday discharges / weekday days)
//     where the days are the UK local dates that overlap [from, to). 0 when
//     there are no weekday discharges or the period has no weekend day.
//   * awaiting_discharge: referrals that are open (status set, and neither
//     DISCHARGED nor WITHDRAWN), created before `to`, and medically optimised by the end
//     of the period: medically_optimised_at set and before min(to, now), or,
//     when it is not set, discharge_ready_date set and on or before the last
//     UK local date of the period. hours_waiting = (min(to, now) - medically
//     optimised) in hours, where a referral without medically_optimised_at is
//     taken as optimised at UK local midnight starting its discharge-ready
//     date (its AwaitingDischarge.medically_optimised_at is then left unset);
//     never negative. Sorted longest wait first (then by referral_id).
//   * open_escalations: the sum of open_escalations sizes over open referrals
//     and referrals whose person is still in D2A capacity.
//   * from, to, place and computed_at (= now) are echoed.
#pragma once

#include <cstdint>
#include <vector>

#include "icr/v1/events.pb.h"
#include "icr/v1/workflow.pb.h"

namespace icr::broker::workflow {

// REQUIRES: from_micros < to_micros.
icr::v1::FlowMetrics ComputeFlowMetrics(const std::vector<icr::v1::Referral>& referrals,
                                        int64_t from_micros, int64_t to_micros,
                                        icr::v1::Place place, int64_t now_micros);

// The median of `values` (sorted in place; the mean of the middle two for an
// even count); 0 when empty.
double Median(std::vector<double>* values);

// ---------------------------------------------------------------------------
// UK civil dates (Europe/London, broker/civil_time.h), shared by the metrics,
// the simulator and icrctl.
// ---------------------------------------------------------------------------

// The UK local date of an instant, as days since 1970-01-01.
int64_t UkLocalDay(int64_t micros);
// The instant (UTC micros) of 00:00 UK local time on `day` (days since
// 1970-01-01).
int64_t UkLocalMidnightMicros(int64_t day);
// The instant of hh:mm UK local time on `day` (a skipped spring hour is read
// as GMT, a repeated autumn hour as its first, BST, occurrence).
int64_t UkLocalTimeMicros(int64_t day, int hour, int minute);
// Minutes after UK local midnight of an instant (0..1439; 1440+ never).
int UkLocalMinuteOfDay(int64_t micros);
// 0 = Sunday .. 6 = Saturday, of a day since 1970-01-01.
int DayOfWeek(int64_t day);
// Days since 1970-01-01 <-> calendar dates.
icr::v1::Date DateFromDay(int64_t day);
int64_t DayFromDate(const icr::v1::Date& date);

}  // namespace icr::broker::workflow
