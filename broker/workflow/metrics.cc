#include "broker/workflow/metrics.h"

#include <algorithm>
#include <array>
#include <string>

#include "broker/civil_time.h"
#include "broker/timestamp.h"

namespace icr::broker::workflow {
namespace {

constexpr int64_t kMicrosPerSecond = 1000000;
constexpr int64_t kMicrosPerDay = 86400 * kMicrosPerSecond;

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

// Howard Hinnant's civil_from_days: the year of a day since 1970-01-01.
void CivilFromDays(int64_t z, int64_t* y, int* m, int* d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  *d = static_cast<int>(doy - (153 * mp + 2) / 5 + 1);
  *m = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
  *y = yoe + era * 400 + (*m <= 2 ? 1 : 0);
}

int64_t YearOfDay(int64_t day) {
  int64_t y;
  int m, d;
  CivilFromDays(day, &y, &m, &d);
  return y;
}

// UK local wall-clock seconds (as if UTC) of a UTC instant in seconds.
int64_t LocalSeconds(int64_t utc_seconds) {
  const int64_t year = YearOfDay(FloorDiv(utc_seconds, 86400));
  return utc_seconds + (civil::IsBritishSummerTime(utc_seconds, year) ? 3600 : 0);
}

bool InPeriod(const google::protobuf::Timestamp& t, bool has, int64_t from, int64_t to) {
  if (!has) return false;
  const int64_t m = ToMicros(t);
  return m >= from && m < to;
}

void FillStat(std::vector<double>* values, icr::v1::DurationStat* out) {
  out->set_count(static_cast<uint32_t>(values->size()));
  if (values->empty()) {
    out->set_mean(0);
    out->set_median(0);
    return;
  }
  double sum = 0;
  for (double v : *values) sum += v;
  out->set_mean(sum / static_cast<double>(values->size()));
  out->set_median(Median(values));
}

// Open: in a state it can still leave (as referral.h's IsOpen).
bool IsOpenReferral(const icr::v1::Referral& r) {
  return r.status() != icr::v1::DISCHARGED && r.status() != icr::v1::WITHDRAWN &&
         r.status() != icr::v1::REFERRAL_STATUS_UNSPECIFIED;
}

// Calendar days (UK local dates) from a to b.
int64_t CalendarDays(const google::protobuf::Timestamp& a, const google::protobuf::Timestamp& b) {
  return UkLocalDay(ToMicros(b)) - UkLocalDay(ToMicros(a));
}

}  // namespace

double Median(std::vector<double>* values) {
  if (values->empty()) return 0;
  std::sort(values->begin(), values->end());
  const size_t n = values->size();
  if (n % 2 == 1) return (*values)[n / 2];
  return ((*values)[n / 2 - 1] + (*values)[n / 2]) / 2;
}

int64_t UkLocalDay(int64_t micros) {
  return FloorDiv(LocalSeconds(FloorDiv(micros, kMicrosPerSecond)), 86400);
}

int64_t UkLocalTimeMicros(int64_t day, int hour, int minute) {
  const int64_t local = day * 86400 + hour * 3600 + minute * 60;
  return civil::LondonLocalToUtc(local, YearOfDay(day)) * kMicrosPerSecond;
}

int64_t UkLocalMidnightMicros(int64_t day) { return UkLocalTimeMicros(day, 0, 0); }

int UkLocalMinuteOfDay(int64_t micros) {
  const int64_t local = LocalSeconds(FloorDiv(micros, kMicrosPerSecond));
  return static_cast<int>((local - FloorDiv(local, 86400) * 86400) / 60);
}

int DayOfWeek(int64_t day) { return civil::Weekday(day); }

icr::v1::Date DateFromDay(int64_t day) {
  int64_t y;
  int m, d;
  CivilFromDays(day, &y, &m, &d);
  icr::v1::Date out;
  out.set_year(static_cast<int32_t>(y));
  out.set_month(m);
  out.set_day(d);
  return out;
}

int64_t DayFromDate(const icr::v1::Date& date) {
  return civil::DaysFromCivil(date.year(), date.month(), date.day());
}

icr::v1::FlowMetrics ComputeFlowMetrics(const std::vector<icr::v1::Referral>& referrals,
                                        int64_t from, int64_t to, icr::v1::Place place,
                                        int64_t now) {
  icr::v1::FlowMetrics out;
  SetTimestamp(out.mutable_from(), from);
  SetTimestamp(out.mutable_to(), to);
  out.set_place(place);
  SetTimestamp(out.mutable_computed_at(), now);

  struct Acc {
    std::vector<double> minutes_to_brokerage, days_to_offer, days_offer_to_discharge,
        days_referral_to_discharge;
    uint32_t referrals = 0, discharges = 0, weekend = 0, weekday = 0;
  };
  std::array<Acc, 4> acc;  // PATHWAY_0..PATHWAY_3
  const int64_t end = std::min(to, now);
  const int64_t last_day = UkLocalDay(to - 1);
  uint32_t open_escalations = 0;
  std::vector<icr::v1::AwaitingDischarge> awaiting;

  for (const icr::v1::Referral& r : referrals) {
    if (place != icr::v1::PLACE_UNSPECIFIED && r.place() != place) continue;

    // A discharged person still in D2A capacity can hold a 6-week escalation.
    if (IsOpenReferral(r) || r.in_d2a()) {
      open_escalations += static_cast<uint32_t>(r.open_escalations_size());
    }
    if (IsOpenReferral(r)) {
      const bool created_before = r.has_created_at() && ToMicros(r.created_at()) < to;
      int64_t optimised = 0;
      bool waiting = false;
      if (r.has_medically_optimised_at()) {
        optimised = ToMicros(r.medically_optimised_at());
        waiting = optimised <= end;
      } else if (r.has_discharge_ready_date()) {
        const int64_t ready_day = DayFromDate(r.discharge_ready_date());
        waiting = ready_day <= last_day;
        optimised = UkLocalMidnightMicros(ready_day);
      }
      if (created_before && waiting) {
        icr::v1::AwaitingDischarge a;
        a.set_nhs_number(r.nhs_number());
        a.set_referral_id(r.referral_id());
        a.set_pathway(r.pathway());
        a.set_place(r.place());
        a.set_status(r.status());
        if (r.has_medically_optimised_at()) {
          *a.mutable_medically_optimised_at() = r.medically_optimised_at();
        }
        a.set_hours_waiting(std::max<double>(0, static_cast<double>(end - optimised) / 3.6e9));
        awaiting.push_back(std::move(a));
      }
    }

    const int index = static_cast<int>(r.pathway()) - static_cast<int>(icr::v1::PATHWAY_0);
    if (index < 0 || index > 3) continue;
    Acc& p = acc[static_cast<size_t>(index)];

    if (InPeriod(r.created_at(), r.has_created_at(), from, to)) ++p.referrals;
    if (InPeriod(r.forwarded_at(), r.has_forwarded_at(), from, to) && r.has_created_at()) {
      p.minutes_to_brokerage.push_back(
          static_cast<double>(ToMicros(r.forwarded_at()) - ToMicros(r.created_at())) / 6e7);
    }
    if (InPeriod(r.offer_made_at(), r.has_offer_made_at(), from, to) && r.has_forwarded_at()) {
      p.days_to_offer.push_back(
          static_cast<double>(CalendarDays(r.forwarded_at(), r.offer_made_at())));
    }
    if (InPeriod(r.discharged_at(), r.has_discharged_at(), from, to)) {
      ++p.discharges;
      const int dow = DayOfWeek(UkLocalDay(ToMicros(r.discharged_at())));
      if (dow == 0 || dow == 6) {
        ++p.weekend;
      } else {
        ++p.weekday;
      }
      if (r.has_offer_made_at()) {
        p.days_offer_to_discharge.push_back(
            static_cast<double>(CalendarDays(r.offer_made_at(), r.discharged_at())));
      }
      if (r.has_created_at()) {
        p.days_referral_to_discharge.push_back(
            static_cast<double>(CalendarDays(r.created_at(), r.discharged_at())));
      }
    }
  }

  uint32_t weekend = 0, weekday = 0;
  for (size_t i = 0; i < acc.size(); ++i) {
    Acc& p = acc[i];
    icr::v1::PathwayFlow* f = out.add_pathways();
    f->set_pathway(
        static_cast<icr::v1::DischargePathway>(icr::v1::PATHWAY_0 + static_cast<int>(i)));
    FillStat(&p.minutes_to_brokerage, f->mutable_minutes_referral_to_brokerage());
    FillStat(&p.days_to_offer, f->mutable_days_brokerage_to_offer());
    FillStat(&p.days_offer_to_discharge, f->mutable_days_offer_to_discharge());
    FillStat(&p.days_referral_to_discharge, f->mutable_days_referral_to_discharge());
    f->set_referrals(p.referrals);
    f->set_discharges(p.discharges);
    f->set_weekend_discharges(p.weekend);
    f->set_weekday_discharges(p.weekday);
    weekend += p.weekend;
    weekday += p.weekday;
  }

  // Whole weeks hold 2 weekend days; the remainder (< 7 days) is counted.
  const int64_t first_day = UkLocalDay(from);
  const int64_t days = std::max<int64_t>(0, last_day - first_day + 1);
  int64_t weekend_days = days / 7 * 2;
  for (int64_t day = first_day + days / 7 * 7; day <= last_day; ++day) {
    const int dow = DayOfWeek(day);
    if (dow == 0 || dow == 6) ++weekend_days;
  }
  const int64_t weekday_days = days - weekend_days;
  if (weekday > 0 && weekend_days > 0 && weekday_days > 0) {
    out.set_weekend_to_weekday_ratio(
        (static_cast<double>(weekend) / static_cast<double>(weekend_days)) /
        (static_cast<double>(weekday) / static_cast<double>(weekday_days)));
  }

  std::sort(awaiting.begin(), awaiting.end(),
            [](const icr::v1::AwaitingDischarge& a, const icr::v1::AwaitingDischarge& b) {
              if (a.hours_waiting() != b.hours_waiting())
                return a.hours_waiting() > b.hours_waiting();
              return a.referral_id() < b.referral_id();
            });
  for (auto& a : awaiting) *out.add_awaiting_discharge() = std::move(a);
  out.set_open_escalations(open_escalations);
  return out;
}

}  // namespace icr::broker::workflow
