// Flow metrics (broker/workflow/metrics.h) and the event simulator
// (broker/workflow/simulator.h): every metric definition, medians, the
// weekend ratio, the Place filter and UK day boundaries in BST and GMT; the
// simulator's determinism, validity (every event passes the broker's own
// validation), legal referral lifecycles and volumes; and Coventry's 2022/23
// referral -> brokerage -> discharge table reproduced from a built scenario.
#include "broker/workflow/metrics.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "broker/civil_time.h"
#include "broker/nhs_number.h"
#include "broker/timestamp.h"
#include "broker/validation.h"
#include "broker/workflow/referral.h"
#include "broker/workflow/simulator.h"

namespace icr::broker::workflow {
namespace {

using icr::v1::CareEvent;
using icr::v1::Referral;

constexpr int64_t kMinute = 60 * 1000000LL;
constexpr int64_t kHour = 60 * kMinute;
constexpr int64_t kDay = 24 * kHour;

constexpr int64_t Day(int y, int m, int d) { return icr::civil::DaysFromCivil(y, m, d); }
// hh:mm UK local time on a date.
int64_t Uk(int y, int m, int d, int hh = 0, int mm = 0) {
  return UkLocalTimeMicros(Day(y, m, d), hh, mm);
}
// hh:mm UTC on a date.
int64_t Utc(int y, int m, int d, int hh = 0, int mm = 0) {
  return Day(y, m, d) * kDay + hh * kHour + mm * kMinute;
}
void Set(google::protobuf::Timestamp* t, int64_t micros) { SetTimestamp(t, micros); }

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A referral with the milestones given (0: unset).
Referral MakeReferral(const std::string& id, icr::v1::DischargePathway pathway, int64_t created,
                      int64_t forwarded = 0, int64_t offer = 0, int64_t discharged = 0,
                      icr::v1::Place place = icr::v1::COVENTRY) {
  Referral r;
  r.set_referral_id(id);
  r.set_nhs_number("9990000018");
  r.set_pathway(pathway);
  r.set_place(place);
  r.set_status(icr::v1::CREATED);
  if (created) Set(r.mutable_created_at(), created);
  if (forwarded) {
    Set(r.mutable_forwarded_at(), forwarded);
    r.set_status(icr::v1::FORWARDED_TO_BROKERAGE);
  }
  if (offer) {
    Set(r.mutable_offer_made_at(), offer);
    r.set_status(icr::v1::OFFER_MADE);
  }
  if (discharged) {
    Set(r.mutable_discharged_at(), discharged);
    r.set_status(icr::v1::DISCHARGED);
  }
  return r;
}

const icr::v1::PathwayFlow& Flow(const icr::v1::FlowMetrics& m, icr::v1::DischargePathway p) {
  return m.pathways(static_cast<int>(p) - static_cast<int>(icr::v1::PATHWAY_0));
}

// ---------------------------------------------------------------------------
// UK calendar helpers
// ---------------------------------------------------------------------------

TEST(UkCalendarTest, LocalDayFollowsBstAndGmt) {
  // 23:30 UTC is 00:30 the next day in BST (June), the same day in GMT.
  EXPECT_EQ(UkLocalDay(Utc(2022, 6, 10, 23, 30)), Day(2022, 6, 11));
  EXPECT_EQ(UkLocalDay(Utc(2022, 6, 10, 22, 59)), Day(2022, 6, 10));
  EXPECT_EQ(UkLocalDay(Utc(2022, 1, 10, 23, 30)), Day(2022, 1, 10));
  // Local midnight is 23:00 UTC the day before in BST, 00:00 UTC in GMT.
  EXPECT_EQ(UkLocalMidnightMicros(Day(2022, 6, 11)), Utc(2022, 6, 10, 23, 0));
  EXPECT_EQ(UkLocalMidnightMicros(Day(2022, 1, 11)), Utc(2022, 1, 11, 0, 0));
  // The change days: BST from 01:00 UTC on 27/03/2022 to 01:00 UTC on 30/10/2022.
  EXPECT_EQ(UkLocalTimeMicros(Day(2022, 3, 27), 12, 0), Utc(2022, 3, 27, 11, 0));
  EXPECT_EQ(UkLocalTimeMicros(Day(2022, 10, 30), 12, 0), Utc(2022, 10, 30, 12, 0));
  EXPECT_EQ(UkLocalMinuteOfDay(Utc(2022, 6, 10, 23, 30)), 30);
  EXPECT_EQ(UkLocalMinuteOfDay(Utc(2022, 1, 10, 23, 30)), 23 * 60 + 30);
  EXPECT_EQ(DayOfWeek(Day(2022, 6, 11)), 6);  // a Saturday
  const icr::v1::Date d = DateFromDay(Day(2024, 2, 29));
  EXPECT_EQ(d.year(), 2024);
  EXPECT_EQ(d.month(), 2);
  EXPECT_EQ(d.day(), 29);
  EXPECT_EQ(DateFromDay(-1).year(), 1969);
}

TEST(UkCalendarTest, MedianOfEvenCountIsMeanOfMiddleTwo) {
  std::vector<double> odd = {5, 1, 3};
  EXPECT_EQ(Median(&odd), 3);
  std::vector<double> even = {4, 1, 10, 2};
  EXPECT_EQ(Median(&even), 3);  // (2 + 4) / 2
  std::vector<double> none;
  EXPECT_EQ(Median(&none), 0);
}

// ---------------------------------------------------------------------------
// ComputeFlowMetrics
// ---------------------------------------------------------------------------

class FlowMetricsTest : public ::testing::Test {
 protected:
  // 06/06/2022 (Mon) - 19/06/2022 (Sun), UK dates, BST: 10 weekdays, 4 weekend days.
  const int64_t from_ = Uk(2022, 6, 6);
  const int64_t to_ = Uk(2022, 6, 20);
  const int64_t now_ = Uk(2022, 7, 1, 12, 0);

  icr::v1::FlowMetrics Compute(const std::vector<Referral>& r,
                               icr::v1::Place place = icr::v1::PLACE_UNSPECIFIED) {
    return ComputeFlowMetrics(r, from_, to_, place, now_);
  }
};

TEST_F(FlowMetricsTest, EmptyInputHasFourPathwaysAndEchoesTheRequest) {
  const auto m = Compute({}, icr::v1::RUGBY);
  ASSERT_EQ(m.pathways_size(), 4);
  for (int i = 0; i < 4; ++i) {
    const auto& f = m.pathways(i);
    EXPECT_EQ(f.pathway(), icr::v1::PATHWAY_0 + i);
    EXPECT_EQ(f.minutes_referral_to_brokerage().count(), 0u);
    EXPECT_EQ(f.minutes_referral_to_brokerage().mean(), 0);
    EXPECT_EQ(f.minutes_referral_to_brokerage().median(), 0);
    EXPECT_EQ(f.referrals(), 0u);
    EXPECT_EQ(f.discharges(), 0u);
  }
  EXPECT_EQ(ToMicros(m.from()), from_);
  EXPECT_EQ(ToMicros(m.to()), to_);
  EXPECT_EQ(m.place(), icr::v1::RUGBY);
  EXPECT_EQ(ToMicros(m.computed_at()), now_);
  EXPECT_EQ(m.weekend_to_weekday_ratio(), 0);
  EXPECT_EQ(m.awaiting_discharge_size(), 0);
  EXPECT_EQ(m.open_escalations(), 0u);
}

TEST_F(FlowMetricsTest, MinutesToBrokerageCountWhenForwardedInThePeriod) {
  const int64_t t = Uk(2022, 6, 8, 10, 0);
  std::vector<Referral> r = {
      MakeReferral("a", icr::v1::PATHWAY_1, t, t + 20 * kMinute),
      MakeReferral("b", icr::v1::PATHWAY_1, t, t + 30 * kMinute),
      MakeReferral("c", icr::v1::PATHWAY_1, t, t + 70 * kMinute),
      MakeReferral("d", icr::v1::PATHWAY_1, t, t + 40 * kMinute),
      // Created before the period, forwarded in it: counts (90 min).
      MakeReferral("e", icr::v1::PATHWAY_1, from_ - 60 * kMinute, from_ + 30 * kMinute),
      // Forwarded exactly at `to`, or before `from`: not in the period.
      MakeReferral("f", icr::v1::PATHWAY_1, to_ - 10 * kMinute, to_),
      MakeReferral("g", icr::v1::PATHWAY_1, from_ - 2 * kHour, from_ - kMinute),
      // Another pathway.
      MakeReferral("h", icr::v1::PATHWAY_2, t, t + 34 * kMinute),
  };
  const auto m = Compute(r);
  const auto& s = Flow(m, icr::v1::PATHWAY_1).minutes_referral_to_brokerage();
  EXPECT_EQ(s.count(), 5u);
  EXPECT_DOUBLE_EQ(s.mean(), (20 + 30 + 70 + 40 + 90) / 5.0);
  EXPECT_DOUBLE_EQ(s.median(), 40);
  const auto& s2 = Flow(m, icr::v1::PATHWAY_2).minutes_referral_to_brokerage();
  EXPECT_EQ(s2.count(), 1u);
  EXPECT_DOUBLE_EQ(s2.mean(), 34);
  // Referrals created in the period: a, b, c, d, f (and h on pathway 2).
  EXPECT_EQ(Flow(m, icr::v1::PATHWAY_1).referrals(), 5u);
  EXPECT_EQ(Flow(m, icr::v1::PATHWAY_2).referrals(), 1u);
}

TEST_F(FlowMetricsTest, FractionalMinutesAndEvenMedian) {
  const int64_t t = Uk(2022, 6, 8, 10, 0);
  std::vector<Referral> r = {
      MakeReferral("a", icr::v1::PATHWAY_2, t, t + 30 * kMinute + 30 * 1000000LL),  // 30.5
      MakeReferral("b", icr::v1::PATHWAY_2, t, t + 33 * kMinute),
      MakeReferral("c", icr::v1::PATHWAY_2, t, t + 35 * kMinute),
      MakeReferral("d", icr::v1::PATHWAY_2, t, t + 40 * kMinute),
  };
  const icr::v1::FlowMetrics m = Compute(r);  // Flow() returns a reference into it
  const auto& s = Flow(m, icr::v1::PATHWAY_2).minutes_referral_to_brokerage();
  EXPECT_EQ(s.count(), 4u);
  EXPECT_DOUBLE_EQ(s.mean(), (30.5 + 33 + 35 + 40) / 4);
  EXPECT_DOUBLE_EQ(s.median(), 34);  // (33 + 35) / 2
}

TEST_F(FlowMetricsTest, DaysToOfferAreUkCalendarDaysInBst) {
  // Forwarded 23:10 BST on 8 June (22:10 UTC); offers at 00:20 BST on 9 June
  // (23:20 UTC on the 8th: the same UTC date, the next UK date) and 23:50
  // BST on 8 June.
  const int64_t fwd = Utc(2022, 6, 8, 22, 10);
  std::vector<Referral> r = {
      MakeReferral("next-uk-day", icr::v1::PATHWAY_1, fwd - 30 * kMinute, fwd,
                   Utc(2022, 6, 8, 23, 20)),
      MakeReferral("same-uk-day", icr::v1::PATHWAY_1, fwd - 30 * kMinute, fwd,
                   Utc(2022, 6, 8, 22, 50)),
      // 00:05 BST on 10 June to 23:55 BST on 12 June: 2 calendar days, though
      // almost 3 x 24 hours.
      MakeReferral("two", icr::v1::PATHWAY_2, Uk(2022, 6, 9, 23, 30), Uk(2022, 6, 10, 0, 5),
                   Uk(2022, 6, 12, 23, 55)),
      // The offer after the period does not count.
      MakeReferral("late", icr::v1::PATHWAY_2, Uk(2022, 6, 19, 10, 0), Uk(2022, 6, 19, 10, 30),
                   Uk(2022, 6, 20, 9, 0)),
  };
  const auto m = Compute(r);
  const auto& pw1 = Flow(m, icr::v1::PATHWAY_1).days_brokerage_to_offer();
  EXPECT_EQ(pw1.count(), 2u);
  EXPECT_DOUBLE_EQ(pw1.mean(), 0.5);
  EXPECT_DOUBLE_EQ(pw1.median(), 0.5);
  const auto& pw2 = Flow(m, icr::v1::PATHWAY_2).days_brokerage_to_offer();
  EXPECT_EQ(pw2.count(), 1u);
  EXPECT_DOUBLE_EQ(pw2.mean(), 2);
}

TEST(FlowMetricsGmtTest, DaysAreUkCalendarDaysInGmt) {
  // January: UK time is UTC. 00:10 -> 23:50 the same day is 0 days;
  // 23:50 -> 00:10 the next day is 1.
  const int64_t from = Uk(2022, 1, 1), to = Uk(2022, 2, 1);
  std::vector<Referral> r = {
      MakeReferral("zero", icr::v1::PATHWAY_1, Utc(2022, 1, 10, 0, 0), Utc(2022, 1, 10, 0, 10),
                   Utc(2022, 1, 10, 23, 50)),
      MakeReferral("one", icr::v1::PATHWAY_1, Utc(2022, 1, 10, 23, 20), Utc(2022, 1, 10, 23, 50),
                   Utc(2022, 1, 11, 0, 10)),
  };
  const auto m = ComputeFlowMetrics(r, from, to, icr::v1::PLACE_UNSPECIFIED, to);
  const auto& s = Flow(m, icr::v1::PATHWAY_1).days_brokerage_to_offer();
  EXPECT_EQ(s.count(), 2u);
  EXPECT_DOUBLE_EQ(s.mean(), 0.5);
  // 23:20 -> 23:50 is 30 minutes; 00:00 -> 00:10 is 10.
  EXPECT_DOUBLE_EQ(Flow(m, icr::v1::PATHWAY_1).minutes_referral_to_brokerage().mean(), 20);
}

TEST_F(FlowMetricsTest, DischargeDurationsCountWhenDischargedInThePeriod) {
  std::vector<Referral> r = {
      // Created 7 June, offer 8 June, discharged 10 June: 2 and 3 days.
      MakeReferral("a", icr::v1::PATHWAY_1, Uk(2022, 6, 7, 10), Uk(2022, 6, 7, 10, 31),
                   Uk(2022, 6, 8, 14), Uk(2022, 6, 10, 11)),
      // Created before the period, discharged in it: 5 and 7 days.
      MakeReferral("b", icr::v1::PATHWAY_1, Uk(2022, 6, 1, 9), Uk(2022, 6, 1, 9, 30),
                   Uk(2022, 6, 3, 14), Uk(2022, 6, 8, 11)),
      // Discharged after the period: no discharge durations.
      MakeReferral("c", icr::v1::PATHWAY_1, Uk(2022, 6, 15, 10), Uk(2022, 6, 15, 10, 30),
                   Uk(2022, 6, 16, 14), Uk(2022, 6, 21, 11)),
  };
  // A pathway 0 referral has no offer: it counts in referral -> discharge
  // only.
  Referral pw0 = MakeReferral("d", icr::v1::PATHWAY_0, Uk(2022, 6, 9, 9), 0, 0, Uk(2022, 6, 9, 15));
  r.push_back(pw0);
  const auto m = Compute(r);
  const auto& pw1 = Flow(m, icr::v1::PATHWAY_1);
  EXPECT_EQ(pw1.discharges(), 2u);
  EXPECT_EQ(pw1.days_offer_to_discharge().count(), 2u);
  EXPECT_DOUBLE_EQ(pw1.days_offer_to_discharge().mean(), 3.5);  // (2 + 5) / 2
  EXPECT_DOUBLE_EQ(pw1.days_offer_to_discharge().median(), 3.5);
  EXPECT_EQ(pw1.days_referral_to_discharge().count(), 2u);
  EXPECT_DOUBLE_EQ(pw1.days_referral_to_discharge().mean(), 5);  // (3 + 7) / 2
  EXPECT_EQ(pw1.referrals(), 2u);                                // a and c
  EXPECT_EQ(pw1.days_brokerage_to_offer().count(), 2u);          // a and c (b's offer is before)
  const auto& p0 = Flow(m, icr::v1::PATHWAY_0);
  EXPECT_EQ(p0.discharges(), 1u);
  EXPECT_EQ(p0.days_offer_to_discharge().count(), 0u);
  EXPECT_EQ(p0.days_referral_to_discharge().count(), 1u);
  EXPECT_DOUBLE_EQ(p0.days_referral_to_discharge().mean(), 0);
}

TEST_F(FlowMetricsTest, WeekendDischargesByUkDayAndTheRatio) {
  std::vector<Referral> r;
  int n = 0;
  auto discharge = [&](int64_t at, icr::v1::DischargePathway p = icr::v1::PATHWAY_1) {
    r.push_back(MakeReferral("r" + std::to_string(++n), p, at - 3 * kDay, 0, 0, at));
  };
  // One discharge on each of the 10 weekdays.
  for (int d : {6, 7, 8, 9, 10, 13, 14, 15, 16, 17}) discharge(Uk(2022, 6, d, 11));
  // Saturday 11 June, 12:00 BST: weekend.
  discharge(Uk(2022, 6, 11, 12), icr::v1::PATHWAY_2);
  // 23:30 UTC on Sunday 12 June is 00:30 BST on Monday 13 June: a weekday,
  // though a Sunday in UTC.
  discharge(Utc(2022, 6, 12, 23, 30));
  // 23:30 UTC on Friday 17 June is 00:30 BST on Saturday 18 June: weekend.
  discharge(Utc(2022, 6, 17, 23, 30));
  const auto m = Compute(r);
  const auto& pw1 = Flow(m, icr::v1::PATHWAY_1);
  EXPECT_EQ(pw1.discharges(), 12u);
  EXPECT_EQ(pw1.weekday_discharges(), 11u);
  EXPECT_EQ(pw1.weekend_discharges(), 1u);
  EXPECT_EQ(Flow(m, icr::v1::PATHWAY_2).weekend_discharges(), 1u);
  // (2 weekend discharges / 4 weekend days) / (11 / 10 weekdays).
  EXPECT_DOUBLE_EQ(m.weekend_to_weekday_ratio(), (2.0 / 4) / (11.0 / 10));
}

TEST_F(FlowMetricsTest, RatioIsZeroWithoutWeekdayDischarges) {
  std::vector<Referral> r = {
      MakeReferral("sat", icr::v1::PATHWAY_1, Uk(2022, 6, 8, 10), 0, 0, Uk(2022, 6, 11, 12))};
  EXPECT_EQ(Compute(r).weekend_to_weekday_ratio(), 0);
  // A period of weekdays only (Mon 6 - Fri 10 June) has no weekend days.
  std::vector<Referral> w = {
      MakeReferral("wed", icr::v1::PATHWAY_1, Uk(2022, 6, 6, 10), 0, 0, Uk(2022, 6, 8, 12))};
  EXPECT_EQ(ComputeFlowMetrics(w, Uk(2022, 6, 6), Uk(2022, 6, 11), icr::v1::PLACE_UNSPECIFIED, now_)
                .weekend_to_weekday_ratio(),
            0);
}

TEST_F(FlowMetricsTest, WeekendDaysAreCountedInUkDatesOfAPartialPeriod) {
  // [Fri 10 June 12:00 BST, Sun 12 June 00:30 BST): UK dates Fri, Sat, Sun
  // overlap it: 2 weekend days, 1 weekday.
  const int64_t from = Uk(2022, 6, 10, 12), to = Uk(2022, 6, 12, 0, 30);
  std::vector<Referral> r = {
      MakeReferral("fri", icr::v1::PATHWAY_1, from - kDay, 0, 0, Uk(2022, 6, 10, 15)),
      MakeReferral("sat", icr::v1::PATHWAY_1, from - kDay, 0, 0, Uk(2022, 6, 11, 15)),
  };
  const auto m = ComputeFlowMetrics(r, from, to, icr::v1::PLACE_UNSPECIFIED, now_);
  EXPECT_DOUBLE_EQ(m.weekend_to_weekday_ratio(), (1.0 / 2) / (1.0 / 1));
}

TEST_F(FlowMetricsTest, PlaceFilterComesFirst) {
  const int64_t t = Uk(2022, 6, 8, 10);
  std::vector<Referral> r = {
      MakeReferral("cov", icr::v1::PATHWAY_1, t, t + 31 * kMinute, 0, 0, icr::v1::COVENTRY),
      MakeReferral("rug", icr::v1::PATHWAY_1, t, t + 45 * kMinute, 0, 0, icr::v1::RUGBY),
      MakeReferral("rug2", icr::v1::PATHWAY_2, t, 0, 0, Uk(2022, 6, 9, 10), icr::v1::RUGBY),
  };
  r[0].add_open_escalations(icr::v1::NO_OFFER);
  r[1].add_open_escalations(icr::v1::NO_OFFER);
  r[1].add_open_escalations(icr::v1::NOT_FORWARDED_TO_BROKERAGE);

  const auto all = Compute(r);
  EXPECT_EQ(Flow(all, icr::v1::PATHWAY_1).minutes_referral_to_brokerage().count(), 2u);
  EXPECT_DOUBLE_EQ(Flow(all, icr::v1::PATHWAY_1).minutes_referral_to_brokerage().mean(), 38);
  EXPECT_EQ(all.open_escalations(), 3u);

  const auto rugby = Compute(r, icr::v1::RUGBY);
  EXPECT_EQ(rugby.place(), icr::v1::RUGBY);
  EXPECT_EQ(Flow(rugby, icr::v1::PATHWAY_1).minutes_referral_to_brokerage().count(), 1u);
  EXPECT_DOUBLE_EQ(Flow(rugby, icr::v1::PATHWAY_1).minutes_referral_to_brokerage().mean(), 45);
  EXPECT_EQ(Flow(rugby, icr::v1::PATHWAY_2).discharges(), 1u);
  EXPECT_EQ(rugby.open_escalations(), 2u);

  const auto coventry = Compute(r, icr::v1::COVENTRY);
  EXPECT_EQ(Flow(coventry, icr::v1::PATHWAY_1).referrals(), 1u);
  EXPECT_EQ(Flow(coventry, icr::v1::PATHWAY_2).discharges(), 0u);
  EXPECT_EQ(coventry.open_escalations(), 1u);

  const auto south = Compute(r, icr::v1::SOUTH_WARWICKSHIRE);
  for (const auto& f : south.pathways()) EXPECT_EQ(f.referrals(), 0u);
}

TEST_F(FlowMetricsTest, OpenEscalationsOnlyOfOpenReferrals) {
  const int64_t t = Uk(2022, 6, 8, 10);
  Referral open = MakeReferral("open", icr::v1::PATHWAY_1, t, t + 31 * kMinute);
  open.add_open_escalations(icr::v1::NO_OFFER);
  Referral closed = MakeReferral("closed", icr::v1::PATHWAY_1, t, 0, 0, t + kDay);
  closed.add_open_escalations(icr::v1::D2A_OVER_SIX_WEEKS);
  Referral withdrawn = MakeReferral("withdrawn", icr::v1::PATHWAY_2, t);
  withdrawn.set_status(icr::v1::WITHDRAWN);
  withdrawn.add_open_escalations(icr::v1::NO_MANAGEMENT_PLAN);
  Referral no_pathway = MakeReferral("no-pathway", icr::v1::DISCHARGE_PATHWAY_UNSPECIFIED, t);
  no_pathway.add_open_escalations(icr::v1::NO_MANAGEMENT_PLAN);
  const auto m = Compute({open, closed, withdrawn, no_pathway});
  EXPECT_EQ(m.open_escalations(), 2u);
  // The referral without a pathway is in no PathwayFlow.
  uint32_t referrals = 0;
  for (const auto& f : m.pathways()) referrals += f.referrals();
  EXPECT_EQ(referrals, 3u);
}

TEST_F(FlowMetricsTest, AwaitingDischarge) {
  const int64_t t = Uk(2022, 6, 10, 9);
  // Medically optimised 10 June 09:00 BST; waits until `to` (now is later).
  Referral a = MakeReferral("a-mo", icr::v1::PATHWAY_2, t, t + 30 * kMinute);
  Set(a.mutable_medically_optimised_at(), t);
  // Not medically optimised, but discharge-ready on 15 June: waits from
  // 00:00 BST that day.
  Referral b = MakeReferral("b-ready", icr::v1::PATHWAY_1, t);
  b.mutable_discharge_ready_date()->set_year(2022);
  b.mutable_discharge_ready_date()->set_month(6);
  b.mutable_discharge_ready_date()->set_day(15);
  // Discharge-ready on 20 June: after the last date of the period.
  Referral c = MakeReferral("c-later", icr::v1::PATHWAY_1, t);
  *c.mutable_discharge_ready_date() = DateFromDay(Day(2022, 6, 20));
  // Discharged, withdrawn, created after the period: not waiting.
  Referral d = MakeReferral("d-gone", icr::v1::PATHWAY_1, t, 0, 0, t + kDay);
  Set(d.mutable_medically_optimised_at(), t);
  Referral e = MakeReferral("e-withdrawn", icr::v1::PATHWAY_1, t);
  e.set_status(icr::v1::WITHDRAWN);
  Set(e.mutable_medically_optimised_at(), t);
  Referral f = MakeReferral("f-after", icr::v1::PATHWAY_1, to_ + kHour);
  Set(f.mutable_medically_optimised_at(), to_ + 2 * kHour);
  // Optimised after the end of the period: not waiting at its end.
  Referral g = MakeReferral("g-mo-after", icr::v1::PATHWAY_3, t);
  Set(g.mutable_medically_optimised_at(), to_ + kHour);
  Referral h = MakeReferral("h-rugby", icr::v1::PATHWAY_3, t, 0, 0, 0, icr::v1::RUGBY);
  Set(h.mutable_medically_optimised_at(), Uk(2022, 6, 18, 9));

  const auto m = Compute({b, a, c, d, e, f, g, h});
  ASSERT_EQ(m.awaiting_discharge_size(), 3);
  const auto& first = m.awaiting_discharge(0);
  EXPECT_EQ(first.referral_id(), "a-mo");
  EXPECT_EQ(first.nhs_number(), "9990000018");
  EXPECT_EQ(first.pathway(), icr::v1::PATHWAY_2);
  EXPECT_EQ(first.place(), icr::v1::COVENTRY);
  EXPECT_EQ(first.status(), icr::v1::FORWARDED_TO_BROKERAGE);
  EXPECT_EQ(ToMicros(first.medically_optimised_at()), t);
  EXPECT_DOUBLE_EQ(first.hours_waiting(), 9 * 24 + 15);  // to 00:00 BST 20 June
  EXPECT_EQ(m.awaiting_discharge(1).referral_id(), "b-ready");
  EXPECT_FALSE(m.awaiting_discharge(1).has_medically_optimised_at());
  EXPECT_DOUBLE_EQ(m.awaiting_discharge(1).hours_waiting(), 5 * 24);
  EXPECT_EQ(m.awaiting_discharge(2).referral_id(), "h-rugby");
  EXPECT_DOUBLE_EQ(m.awaiting_discharge(2).hours_waiting(), 24 + 15);

  // While the period is still running, waits run to now.
  const int64_t now = Uk(2022, 6, 12, 9);
  const auto live = ComputeFlowMetrics({a, h}, from_, to_, icr::v1::PLACE_UNSPECIFIED, now);
  ASSERT_EQ(live.awaiting_discharge_size(), 1);  // h is optimised after now
  EXPECT_DOUBLE_EQ(live.awaiting_discharge(0).hours_waiting(), 48);

  // The Place filter applies.
  const auto rugby = Compute({a, b, h}, icr::v1::RUGBY);
  ASSERT_EQ(rugby.awaiting_discharge_size(), 1);
  EXPECT_EQ(rugby.awaiting_discharge(0).referral_id(), "h-rugby");
}

// ---------------------------------------------------------------------------
// Folding events into referrals (a test-local fold), with a check that each
// referral's lifecycle is legal.
// ---------------------------------------------------------------------------

struct Folded {
  std::map<std::string, Referral> referrals;
  std::vector<std::string> problems;  // illegal transitions, with the event
  std::map<std::string, std::vector<icr::v1::ReferralStatus>> history;  // states per referral
  std::vector<Referral> List() const {
    std::vector<Referral> out;
    for (const auto& [id, r] : referrals) out.push_back(r);
    return out;
  }
};

bool LegalTransition(icr::v1::ReferralStatus from, icr::v1::ReferralStatus to,
                     icr::v1::DischargePathway pathway) {
  using namespace icr::v1;
  if (from == DISCHARGED || from == WITHDRAWN) return false;
  if (to == WITHDRAWN) return true;
  switch (to) {
    case ACCEPTED:
      return from == CREATED;
    case FORWARDED_TO_BROKERAGE:
      return from == ACCEPTED;
    case PLACEMENT_REQUESTED:
      return from == FORWARDED_TO_BROKERAGE || from == OFFER_MADE;
    case OFFER_MADE:
      return from == PLACEMENT_REQUESTED;
    case OFFER_ACCEPTED:
      return from == OFFER_MADE;
    case SERVICE_CONFIRMED:
      return from == OFFER_ACCEPTED;
    case DISCHARGED:
      return pathway == PATHWAY_0 ? (from == CREATED || from == ACCEPTED)
                                  : from == SERVICE_CONFIRMED;
    default:
      return false;
  }
}

Folded Fold(const std::vector<CareEvent>& events) {
  Folded f;
  std::map<std::string, std::string> by_request, by_offer, newest_of_person;
  for (const CareEvent& e : events) {
    std::string id;
    icr::v1::ReferralStatus to = icr::v1::REFERRAL_STATUS_UNSPECIFIED;
    switch (e.payload_case()) {
      case CareEvent::kDischargeReferral:
        id = e.discharge_referral().referral_id();
        if (f.referrals.count(id)) f.problems.push_back("referral " + id + " created twice");
        to = icr::v1::CREATED;
        break;
      case CareEvent::kReferralStatusChange:
        id = e.referral_status_change().referral_id();
        to = e.referral_status_change().status();
        break;
      case CareEvent::kPlacementRequest:
        id = e.placement_request().referral_id();
        by_request[e.placement_request().request_id()] = id;
        to = icr::v1::PLACEMENT_REQUESTED;
        break;
      case CareEvent::kPlacementOffer:
        id = by_request[e.placement_offer().request_id()];
        by_offer[e.placement_offer().offer_id()] = id;
        to = icr::v1::OFFER_MADE;
        break;
      case CareEvent::kPlacementAcceptance:
        id = by_offer[e.placement_acceptance().offer_id()];
        to = icr::v1::OFFER_ACCEPTED;
        break;
      case CareEvent::kPlacementDecline:
        id = by_offer[e.placement_decline().offer_id()];
        to = icr::v1::PLACEMENT_REQUESTED;
        break;
      case CareEvent::kMedicallyOptimised: {
        auto it = newest_of_person.find(e.nhs_number());
        if (it == newest_of_person.end()) continue;
        Referral& r = f.referrals[it->second];
        if (r.status() != icr::v1::DISCHARGED && r.status() != icr::v1::WITHDRAWN) {
          *r.mutable_medically_optimised_at() = e.occurred_at();
          *r.mutable_discharge_ready_date() = e.medically_optimised().discharge_ready_date();
        }
        continue;
      }
      default:
        continue;
    }
    if (id.empty()) {
      f.problems.push_back("event " + e.source_message_id() + " names no known referral");
      continue;
    }
    Referral& r = f.referrals[id];
    if (to == icr::v1::CREATED) {
      const auto& p = e.discharge_referral();
      r.set_referral_id(id);
      r.set_nhs_number(e.nhs_number());
      r.set_pathway(p.pathway());
      r.set_place(p.place());
      if (p.has_discharge_ready_date())
        *r.mutable_discharge_ready_date() = p.discharge_ready_date();
      *r.mutable_created_at() = e.occurred_at();
      newest_of_person[e.nhs_number()] = id;
    } else {
      if (r.status() == icr::v1::REFERRAL_STATUS_UNSPECIFIED) {
        f.problems.push_back("event " + e.source_message_id() + " for referral " + id +
                             " before its DischargeReferral");
        continue;
      }
      if (!LegalTransition(r.status(), to, r.pathway())) {
        f.problems.push_back("referral " + id + ": " + icr::v1::ReferralStatus_Name(r.status()) +
                             " -> " + icr::v1::ReferralStatus_Name(to) + " (" +
                             e.source_message_id() + ")");
      }
      const auto& t = e.occurred_at();
      switch (e.payload_case()) {
        case CareEvent::kReferralStatusChange:
          if (to == icr::v1::ACCEPTED) *r.mutable_accepted_at() = t;
          if (to == icr::v1::FORWARDED_TO_BROKERAGE) *r.mutable_forwarded_at() = t;
          if (to == icr::v1::SERVICE_CONFIRMED) *r.mutable_service_confirmed_at() = t;
          if (to == icr::v1::DISCHARGED) *r.mutable_discharged_at() = t;
          if (to == icr::v1::WITHDRAWN) *r.mutable_withdrawn_at() = t;
          break;
        case CareEvent::kPlacementRequest:
          *r.mutable_placement_requested_at() = t;
          r.set_service_type(e.placement_request().service_type());
          break;
        case CareEvent::kPlacementOffer:
          *r.mutable_offer_made_at() = t;
          break;
        case CareEvent::kPlacementAcceptance:
          *r.mutable_offer_accepted_at() = t;
          break;
        case CareEvent::kPlacementDecline:
          r.set_offers_declined(r.offers_declined() + 1);
          r.clear_offer_made_at();
          break;
        default:
          break;
      }
    }
    r.set_status(to);
    f.history[id].push_back(to);
  }
  return f;
}

// Every event of `events` passes the broker's validation at `now`; returns
// the problems.
std::vector<std::string> ValidationProblems(const std::vector<CareEvent>& events, int64_t now) {
  std::vector<std::string> problems;
  icr::broker::ValidationOptions options;
  for (size_t i = 0; i < events.size(); ++i) {
    CareEvent copy = events[i];
    std::string p = icr::broker::ValidateAndNormaliseEvent(&copy, now, options,
                                                           "events[" + std::to_string(i) + "]");
    if (!p.empty()) problems.push_back(p);
  }
  return problems;
}

// ---------------------------------------------------------------------------
// Coventry's 2022/23 table (domain.md section 3.3, 002:180-188)
// ---------------------------------------------------------------------------

TEST(CoventryTableTest, ScenarioReproducesTheTableForBothPeriods) {
  const FlowScenario scenario = CoventryTable2022Scenario(20);
  const std::vector<CareEvent> events = BuildFlowScenario(scenario);
  ASSERT_FALSE(events.empty());
  // Valid for a live broker now (all in the past), in time order.
  EXPECT_EQ(ValidationProblems(events, NowMicros()), std::vector<std::string>{});
  for (size_t i = 1; i < events.size(); ++i) {
    ASSERT_LE(ToMicros(events[i - 1].occurred_at()), ToMicros(events[i].occurred_at()));
  }
  const Folded folded = Fold(events);
  EXPECT_EQ(folded.problems, std::vector<std::string>{});
  ASSERT_EQ(folded.referrals.size(), 80u);

  struct Row {
    int64_t from, to;
    double pw1_minutes, pw2_minutes, pw1_offer_days, pw2_offer_days, pw1_discharge_days,
        pw2_discharge_days;
  };
  const Row table[] = {
      {Uk(2022, 5, 23), Uk(2022, 6, 27), 31, 34, 0, 1, 2, 3},
      {Uk(2022, 6, 27), Uk(2022, 8, 1), 29, 32, 0, 2, 2, 3},
  };
  ASSERT_EQ(scenario.periods.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const Row& row = table[i];
    EXPECT_EQ(scenario.periods[i].from_micros, row.from);
    EXPECT_EQ(scenario.periods[i].to_micros, row.to);
    for (auto place : {icr::v1::COVENTRY, icr::v1::PLACE_UNSPECIFIED}) {
      SCOPED_TRACE("period " + std::to_string(i + 1) + ", place " + icr::v1::Place_Name(place));
      const auto m = ComputeFlowMetrics(folded.List(), row.from, row.to, place, NowMicros());
      const auto& pw1 = Flow(m, icr::v1::PATHWAY_1);
      const auto& pw2 = Flow(m, icr::v1::PATHWAY_2);
      EXPECT_EQ(pw1.referrals(), 20u);
      EXPECT_EQ(pw1.discharges(), 20u);
      EXPECT_EQ(pw2.referrals(), 20u);
      EXPECT_EQ(pw2.discharges(), 20u);
      EXPECT_EQ(pw1.minutes_referral_to_brokerage().count(), 20u);
      EXPECT_DOUBLE_EQ(pw1.minutes_referral_to_brokerage().mean(), row.pw1_minutes);
      EXPECT_DOUBLE_EQ(pw1.minutes_referral_to_brokerage().median(), row.pw1_minutes);
      EXPECT_DOUBLE_EQ(pw2.minutes_referral_to_brokerage().mean(), row.pw2_minutes);
      EXPECT_DOUBLE_EQ(pw2.minutes_referral_to_brokerage().median(), row.pw2_minutes);
      EXPECT_EQ(pw1.days_brokerage_to_offer().count(), 20u);
      EXPECT_DOUBLE_EQ(pw1.days_brokerage_to_offer().mean(), row.pw1_offer_days);
      EXPECT_DOUBLE_EQ(pw2.days_brokerage_to_offer().mean(), row.pw2_offer_days);
      EXPECT_DOUBLE_EQ(pw2.days_brokerage_to_offer().median(), row.pw2_offer_days);
      EXPECT_EQ(pw1.days_offer_to_discharge().count(), 20u);
      EXPECT_DOUBLE_EQ(pw1.days_offer_to_discharge().mean(), row.pw1_discharge_days);
      EXPECT_DOUBLE_EQ(pw2.days_offer_to_discharge().mean(), row.pw2_discharge_days);
      EXPECT_DOUBLE_EQ(pw2.days_offer_to_discharge().median(), row.pw2_discharge_days);
      // Referral -> discharge is the sum (created and forwarded the same day).
      EXPECT_DOUBLE_EQ(pw1.days_referral_to_discharge().mean(),
                       row.pw1_offer_days + row.pw1_discharge_days);
      EXPECT_DOUBLE_EQ(pw2.days_referral_to_discharge().mean(),
                       row.pw2_offer_days + row.pw2_discharge_days);
      EXPECT_EQ(Flow(m, icr::v1::PATHWAY_3).referrals(), 0u);
      EXPECT_EQ(m.awaiting_discharge_size(), 0);
    }
    // Another Place sees none of it.
    const auto rugby =
        ComputeFlowMetrics(folded.List(), row.from, row.to, icr::v1::RUGBY, NowMicros());
    EXPECT_EQ(Flow(rugby, icr::v1::PATHWAY_1).referrals(), 0u);
  }
}

TEST(CoventryTableTest, OddCountsFractionalTargetsAndAnotherPlace) {
  FlowScenario s;
  s.seed = 7;
  s.place = icr::v1::SOUTH_WARWICKSHIRE;
  FlowPeriod p;
  p.from_micros = Uk(2023, 1, 2);
  p.to_micros = Uk(2023, 1, 16);
  PathwayTarget pw3;
  pw3.pathway = icr::v1::PATHWAY_3;
  pw3.count = 7;
  pw3.minutes_referral_to_brokerage = 47.5;
  pw3.spread_minutes = 6;
  pw3.days_brokerage_to_offer = 3;
  pw3.days_offer_to_discharge = 4;
  p.pathways = {pw3};
  s.periods = {p};
  const auto events = BuildFlowScenario(s);
  EXPECT_EQ(ValidationProblems(events, NowMicros()), std::vector<std::string>{});
  const Folded folded = Fold(events);
  EXPECT_EQ(folded.problems, std::vector<std::string>{});
  for (const CareEvent& e : events) {
    if (e.has_discharge_referral()) {
      EXPECT_EQ(e.addressee().organisation(), "WCC");
    }
  }
  const auto m = ComputeFlowMetrics(folded.List(), p.from_micros, p.to_micros,
                                    icr::v1::SOUTH_WARWICKSHIRE, NowMicros());
  const auto& f = Flow(m, icr::v1::PATHWAY_3);
  EXPECT_EQ(f.referrals(), 7u);
  EXPECT_EQ(f.discharges(), 7u);
  EXPECT_DOUBLE_EQ(f.minutes_referral_to_brokerage().mean(), 47.5);
  EXPECT_DOUBLE_EQ(f.minutes_referral_to_brokerage().median(), 47.5);
  EXPECT_DOUBLE_EQ(f.days_brokerage_to_offer().mean(), 3);
  EXPECT_DOUBLE_EQ(f.days_offer_to_discharge().mean(), 4);
  EXPECT_DOUBLE_EQ(f.days_referral_to_discharge().mean(), 7);
}

// ---------------------------------------------------------------------------
// Simulator
// ---------------------------------------------------------------------------

SimulationOptions Options(int days, uint64_t seed = 42) {
  SimulationOptions o;
  o.seed = seed;
  o.start_micros = Uk(2025, 3, 3);  // a Monday, GMT; BST starts on 30 March
  o.days = days;
  return o;
}

std::vector<CareEvent> Simulate(const SimulationOptions& o, SimulationStats* stats = nullptr) {
  Simulator sim(o);
  std::vector<CareEvent> out;
  CareEvent e;
  while (sim.Next(&e)) out.push_back(e);
  if (stats) *stats = sim.stats();
  return out;
}

TEST(NhsWalkTest, TestRangeValidAndDistinct) {
  std::set<std::string> seen;
  for (uint64_t n = 0; n < 1000; ++n) {
    const std::string nhs = SimulatedNhsNumber(9, n);
    ASSERT_TRUE(icr::broker::IsValidNhsNumber(nhs)) << nhs;
    ASSERT_TRUE(icr::broker::IsTestRangeNhsNumber(nhs)) << nhs;
    ASSERT_TRUE(seen.insert(nhs).second) << nhs;
  }
  EXPECT_NE(SimulatedNhsNumber(1, 0), SimulatedNhsNumber(2, 0));
}

TEST(SimulatorTest, DeterministicForASeed) {
  const auto a = Simulate(Options(2, 5));
  const auto b = Simulate(Options(2, 5));
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].SerializeAsString(), b[i].SerializeAsString()) << "event " << i;
  }
  const auto c = Simulate(Options(2, 6));
  ASSERT_FALSE(c.empty());
  EXPECT_NE(a.front().SerializeAsString(), c.front().SerializeAsString());
  // Ids of another seed do not collide.
  std::set<std::string> ids;
  for (const auto& e : a) ids.insert(e.source_system_id() + "/" + e.source_message_id());
  for (const auto& e : c)
    EXPECT_EQ(ids.count(e.source_system_id() + "/" + e.source_message_id()), 0u);
}

TEST(SimulatorTest, EveryEventIsValidOrderedAndWellFormed) {
  SimulationStats stats;
  const SimulationOptions o = Options(7);
  const auto events = Simulate(o, &stats);
  ASSERT_GT(events.size(), 7u * 1000);
  EXPECT_EQ(stats.events, events.size());
  const int64_t stop = o.start_micros + 7 * kDay;
  // Valid when published at the end of the simulated time.
  EXPECT_EQ(ValidationProblems(events, stop), std::vector<std::string>{});

  std::set<std::string> message_ids, admitted;
  std::map<icr::v1::EventType, int> by_type;
  std::set<int> places;
  int64_t last = 0;
  for (const CareEvent& e : events) {
    const int64_t t = ToMicros(e.occurred_at());
    ASSERT_GE(t, last) << e.source_message_id();
    ASSERT_GE(t, o.start_micros);
    ASSERT_LT(t, stop);
    last = t;
    EXPECT_TRUE(icr::broker::IsTestRangeNhsNumber(e.nhs_number())) << e.nhs_number();
    EXPECT_TRUE(message_ids.insert(e.source_system_id() + "/" + e.source_message_id()).second)
        << "duplicate " << e.source_message_id();
    const int type = static_cast<int>(e.payload_case());
    ++by_type[static_cast<icr::v1::EventType>(type)];
    const bool workflow =
        type >= icr::v1::DISCHARGE_REFERRAL && type <= icr::v1::PLACEMENT_CANCELLATION;
    EXPECT_EQ(e.priority(), workflow ? icr::v1::URGENT : icr::v1::ROUTINE) << e.source_message_id();
    if (workflow) {
      EXPECT_NE(e.place(), icr::v1::PLACE_UNSPECIFIED) << e.source_message_id();
      places.insert(e.place());
    }
    if (e.has_discharge_referral()) {
      EXPECT_EQ(e.addressee().organisation(), e.place() == icr::v1::COVENTRY ? "CCC" : "WCC");
      EXPECT_EQ(e.addressee().team_code().rfind("HSCT-", 0), 0u);
      EXPECT_EQ(e.discharge_referral().place(), e.place());
    }
    if (e.has_admission()) {
      EXPECT_TRUE(admitted.insert(e.nhs_number()).second) << "admitted twice " << e.nhs_number();
    }
    if (e.has_placement_request()) {
      const auto& r = e.placement_request();
      EXPECT_FALSE(r.referral_id().empty());
      EXPECT_NE(r.start_date().year(), 0);
      if (r.service_type() == icr::v1::HOME_SUPPORT) {
        EXPECT_GT(r.hours_per_week(), 0);
        EXPECT_GE(r.calls_per_day(), 1);
      }
    }
  }
  EXPECT_EQ(places.size(), 4u);
  for (auto type :
       {icr::v1::ADMISSION, icr::v1::TRANSFER, icr::v1::EXPECTED_DISCHARGE_DATE_SET,
        icr::v1::MEDICALLY_OPTIMISED, icr::v1::DISCHARGE_REFERRAL, icr::v1::REFERRAL_STATUS_CHANGE,
        icr::v1::PLACEMENT_REQUEST, icr::v1::PLACEMENT_OFFER, icr::v1::PLACEMENT_ACCEPTANCE,
        icr::v1::PLACEMENT_DECLINE, icr::v1::DISCHARGE, icr::v1::DEMOGRAPHICS_UPDATE,
        icr::v1::GP_REGISTRATION, icr::v1::CARE_ACT_ASSESSMENT, icr::v1::REABLEMENT_START}) {
    EXPECT_GT(by_type[type], 0) << icr::v1::EventType_Name(type);
  }
  EXPECT_EQ(static_cast<uint64_t>(by_type[icr::v1::ADMISSION]), stats.admissions);
  EXPECT_EQ(static_cast<uint64_t>(by_type[icr::v1::DISCHARGE_REFERRAL]), stats.referrals);
  EXPECT_EQ(static_cast<uint64_t>(by_type[icr::v1::PLACEMENT_DECLINE]), stats.declines);
  EXPECT_EQ(static_cast<uint64_t>(by_type[icr::v1::DISCHARGE]), stats.discharges);
}

TEST(SimulatorTest, ReferralLifecyclesAreLegal) {
  SimulationStats stats;
  const auto events = Simulate(Options(10, 3), &stats);
  const Folded folded = Fold(events);
  EXPECT_EQ(folded.problems, std::vector<std::string>{});
  EXPECT_EQ(folded.referrals.size(), stats.referrals);
  EXPECT_GT(stats.withdrawals, 0u);
  EXPECT_GT(stats.declines, 0u);
  int withdrawn = 0, declined_then_accepted = 0, discharged = 0;
  for (const auto& [id, states] : folded.history) {
    ASSERT_EQ(states.front(), icr::v1::CREATED) << id;
    if (states.back() == icr::v1::WITHDRAWN) ++withdrawn;
    if (states.back() == icr::v1::DISCHARGED) ++discharged;
    const Referral& r = folded.referrals.at(id);
    if (r.offers_declined() > 0 && r.has_offer_accepted_at()) ++declined_then_accepted;
    if (r.pathway() == icr::v1::PATHWAY_0 && states.back() == icr::v1::DISCHARGED) {
      EXPECT_EQ(states, (std::vector<icr::v1::ReferralStatus>{icr::v1::CREATED, icr::v1::ACCEPTED,
                                                              icr::v1::DISCHARGED}));
    }
  }
  EXPECT_EQ(static_cast<uint64_t>(withdrawn), stats.withdrawals);
  EXPECT_GT(declined_then_accepted, 0);
  EXPECT_GT(discharged, 100);

  // The broker's own fold (broker/workflow/referral.h) accepts every
  // workflow event in this order.
  std::map<std::string, Referral> state;
  std::map<std::string, std::string> by_request, by_offer, newest;
  std::vector<std::string> refused;
  for (CareEvent e : events) {
    e.set_event_type(static_cast<icr::v1::EventType>(e.payload_case()));
    std::string id;
    switch (e.payload_case()) {
      case CareEvent::kDischargeReferral:
        id = e.discharge_referral().referral_id();
        break;
      case CareEvent::kReferralStatusChange:
        id = e.referral_status_change().referral_id();
        break;
      case CareEvent::kPlacementRequest:
        id = e.placement_request().referral_id();
        by_request[e.placement_request().request_id()] = id;
        break;
      case CareEvent::kPlacementOffer:
        id = by_request[e.placement_offer().request_id()];
        by_offer[e.placement_offer().offer_id()] = id;
        break;
      case CareEvent::kPlacementAcceptance:
        id = by_offer[e.placement_acceptance().offer_id()];
        break;
      case CareEvent::kPlacementDecline:
        id = by_offer[e.placement_decline().offer_id()];
        break;
      case CareEvent::kMedicallyOptimised: {
        auto it = newest.find(e.nhs_number());
        if (it == newest.end() || !IsOpen(state[it->second].status())) continue;
        id = it->second;
        break;
      }
      default:
        continue;
    }
    auto it = state.find(id);
    Referral next;
    std::string problem = ApplyReferralEvent(e, it == state.end() ? nullptr : &it->second, &next);
    if (!problem.empty()) {
      refused.push_back(problem);
      continue;
    }
    state[id] = next;
    if (e.has_discharge_referral()) newest[e.nhs_number()] = id;
  }
  EXPECT_EQ(refused, std::vector<std::string>{});
}

TEST(SimulatorTest, AboutTwoHundredSixtyAdmissionsADay) {
  SimulationOptions o = Options(14, 11);
  const auto events = Simulate(o);
  std::vector<int> per_day(14, 0);
  for (const CareEvent& e : events) {
    if (!e.has_admission()) continue;
    ++per_day[static_cast<size_t>((ToMicros(e.occurred_at()) - o.start_micros) / kDay)];
  }
  int total = 0;
  for (int d = 0; d < 14; ++d) {
    EXPECT_GE(per_day[static_cast<size_t>(d)], 260 * 0.85) << "day " << d;
    EXPECT_LE(per_day[static_cast<size_t>(d)], 260 * 1.15) << "day " << d;
    total += per_day[static_cast<size_t>(d)];
  }
  EXPECT_NEAR(total / 14.0, 260, 260 * 0.05);

  // The rate is an option.
  o.admissions_per_day = 50;
  o.days = 3;
  SimulationStats stats;
  Simulate(o, &stats);
  EXPECT_NEAR(static_cast<double>(stats.admissions) / 3, 50, 50 * 0.15);
}

TEST(SimulatorTest, PathwayMixAndFlowLookLikeCoventry) {
  SimulationStats stats;
  const SimulationOptions o = Options(21, 8);
  const auto events = Simulate(o, &stats);
  // About half of the people admitted go home simply (the referrals of the
  // others come days later: count those admitted in the first 10 days).
  std::map<std::string, int64_t> admitted;
  std::set<std::string> referred;
  for (const CareEvent& e : events) {
    if (e.has_admission()) admitted[e.nhs_number()] = ToMicros(e.occurred_at());
    if (e.has_discharge_referral() && e.discharge_referral().pathway() != icr::v1::PATHWAY_0) {
      referred.insert(e.nhs_number());
    }
  }
  int early_admissions = 0, early_referred = 0;
  for (const auto& [nhs, at] : admitted) {
    if (at >= o.start_micros + 10 * kDay) continue;
    ++early_admissions;
    early_referred += static_cast<int>(referred.count(nhs));
  }
  EXPECT_NEAR(static_cast<double>(early_referred) / early_admissions, 0.5, 0.05);
  // Pathway 1 the most common referral, then 2, then 3.
  EXPECT_GT(stats.referrals_by_pathway[1], stats.referrals_by_pathway[2]);
  EXPECT_GT(stats.referrals_by_pathway[2], stats.referrals_by_pathway[3]);
  EXPECT_GT(stats.referrals_by_pathway[3], 0u);
  EXPECT_GT(stats.referrals_by_pathway[0], 0u);

  // The flow metrics of the middle week: minutes and days as Coventry's.
  const Folded folded = Fold(events);
  const int64_t from = o.start_micros + 7 * kDay, to = o.start_micros + 14 * kDay;
  const auto m = ComputeFlowMetrics(folded.List(), from, to, icr::v1::PLACE_UNSPECIFIED, to);
  const auto& pw1 = Flow(m, icr::v1::PATHWAY_1);
  const auto& pw2 = Flow(m, icr::v1::PATHWAY_2);
  EXPECT_NEAR(pw1.minutes_referral_to_brokerage().mean(), 31, 3);
  EXPECT_NEAR(pw2.minutes_referral_to_brokerage().mean(), 34, 3);
  EXPECT_LT(pw1.days_brokerage_to_offer().mean(), 0.5);
  EXPECT_GE(pw2.days_brokerage_to_offer().mean(), 1);
  EXPECT_LE(pw2.days_brokerage_to_offer().mean(), 2);
  EXPECT_NEAR(pw1.days_offer_to_discharge().mean(), 2.2, 0.6);
  EXPECT_NEAR(pw2.days_offer_to_discharge().mean(), 3.2, 0.7);
  EXPECT_GT(m.weekend_to_weekday_ratio(), 0.4);
  EXPECT_LT(m.weekend_to_weekday_ratio(), 1.0);
  EXPECT_GT(m.awaiting_discharge_size(), 0);
}

TEST(SimulatorTest, StopCutsTheRunShort) {
  SimulationOptions o = Options(3, 4);
  o.stop_micros = o.start_micros + 36 * kHour;
  Simulator sim(o);
  EXPECT_EQ(sim.stop_micros(), o.stop_micros);
  CareEvent e;
  uint64_t n = 0;
  while (sim.Next(&e)) {
    ++n;
    ASSERT_LT(ToMicros(e.occurred_at()), o.stop_micros);
  }
  EXPECT_GT(n, 0u);
  EXPECT_FALSE(sim.Next(&e));
  SimulationOptions none = Options(0);
  Simulator empty(none);
  EXPECT_FALSE(empty.Next(&e));
}

}  // namespace
}  // namespace icr::broker::workflow
