#include "broker/escalation_timer.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "broker/hub.h"
#include "broker/ingest.h"
#include "broker/timestamp.h"
#include "broker/validation.h"
#include "broker/workflow/state_machine.h"
#include "broker/workflow_reader.h"

namespace icr::broker {
namespace {

namespace keys = workflow::keys;

std::string Detail(icr::v1::EscalationKind kind) {
  switch (kind) {
    case icr::v1::NO_MANAGEMENT_PLAN:
      return "no management plan: the referral was not accepted within the time allowed";
    case icr::v1::NOT_FORWARDED_TO_BROKERAGE:
      return "not forwarded to brokerage within the time allowed";
    case icr::v1::NO_OFFER:
      return "brokerage has made no service offer within the pathway's time";
    case icr::v1::D2A_OVER_SIX_WEEKS:
      return "in D2A capacity beyond 6 weeks of the initial placement";
    default:
      return "deadline passed";
  }
}

// A stable id for (referral, kind, deadline), within the broker's 128
// printable characters: a long or unusual referral id is replaced by its
// 64-bit FNV-1a hash.
std::string MessageId(const std::string& referral_id, icr::v1::EscalationKind kind,
                      int64_t due) {
  const std::string tail = ":" + icr::v1::EscalationKind_Name(kind) + ":" + std::to_string(due);
  const bool plain = std::all_of(referral_id.begin(), referral_id.end(),
                                 [](char c) { return c > ' ' && c < 127; });
  if (plain && 11 + referral_id.size() + tail.size() <= 128) {
    return "escalation:" + referral_id + tail;
  }
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : referral_id) h = (h ^ c) * 1099511628211ULL;
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(h));
  return std::string("escalation:h") + hex + tail;
}

}  // namespace

EscalationTimer::EscalationTimer(store::EventStore* store, Ingest* ingest,
                                 EscalationTimerOptions options)
    : store_(store), ingest_(ingest), options_(std::move(options)), timer_(io_) {}

EscalationTimer::~EscalationTimer() { Stop(); }

void EscalationTimer::Start() {
  if (!options_.enabled) return;
  running_.store(true, std::memory_order_release);
  boost::asio::post(io_, [this] { Check(); });
  thread_ = std::thread([this] { io_.run(); });
}

void EscalationTimer::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  running_.store(false, std::memory_order_release);
  io_.stop();
  if (thread_.joinable()) thread_.join();
  // Publishes already handed to the store are answered before it closes;
  // wait for their callbacks, which touch this object.
  while (pending_.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
}

void EscalationTimer::Arm(int64_t next_due_micros) {
  const int64_t now = NowMicros();
  const int64_t wait = std::clamp<int64_t>(next_due_micros - now,
                                           int64_t{options_.poll_ms} * 1000,
                                           int64_t{options_.max_sleep_ms} * 1000);
  wake_at_.store(now + wait);
  timer_.expires_after(std::chrono::microseconds(wait));
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) Check();  // operation_aborted: re-armed earlier by Notify
  });
}

void EscalationTimer::Notify(int64_t due_micros) {
  // Not running (escalations off, or stopped): nothing would take the post.
  if (!running_.load(std::memory_order_acquire)) return;
  if (due_micros >= wake_at_.load(std::memory_order_relaxed)) return;
  boost::asio::post(io_, [this, due_micros] {
    if (due_micros < wake_at_.load()) Arm(due_micros);
  });
}

void EscalationTimer::Check() {
  const int64_t now = NowMicros();
  struct Due {
    std::string key;
    int64_t due;
    std::string referral_id;
    icr::v1::EscalationKind kind;
  };
  std::vector<Due> due;
  std::set<std::string> skip;  // dropped or being published: not counted below
  {
    std::lock_guard<std::mutex> lock(mu_);
    skip = dropped_;
    skip.insert(in_flight_.begin(), in_flight_.end());
  }
  std::set<std::string> seen_skipped;
  int64_t next_due = INT64_MAX;  // the earliest deadline not yet due
  constexpr size_t kMaxPerRound = 1000;
  store::Status s = store_->ScanState(
      std::string(keys::kDeadline), [&](std::string_view key, std::string_view) {
        Due d;
        if (!keys::ParseDeadlineKey(key, &d.due, &d.referral_id, &d.kind)) {
          return true;  // not a deadline key; skip
        }
        if (d.due > now) {  // keys sort by time: nothing later is due
          next_due = d.due;
          return false;
        }
        d.key = std::string(key);
        if (skip.count(d.key)) {
          seen_skipped.insert(std::move(d.key));
          return true;
        }
        due.push_back(std::move(d));
        return due.size() < kMaxPerRound;
      });
  if (!s.ok()) {
    std::fprintf(stderr, "icr-broker: escalation timer: %s (retrying)\n", s.ToString().c_str());
  }
  if (s.ok() && due.size() < kMaxPerRound) {
    // The scan saw every due key: forget dropped ones gone from the store,
    // so the set stays as small as the stale keys themselves.
    std::lock_guard<std::mutex> lock(mu_);
    std::set<std::string> still;
    for (const std::string& k : dropped_) {
      if (seen_skipped.count(k)) still.insert(k);
    }
    dropped_.swap(still);
  }
  for (Due& d : due) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopped_ || in_flight_.count(d.key) || dropped_.count(d.key)) continue;
      in_flight_.insert(d.key);
    }
    icr::v1::Referral referral;
    store::Status rs = ReadReferral(store_, d.referral_id, &referral);
    if (!rs.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      in_flight_.erase(d.key);
      if (rs.code() == store::StatusCode::kNotFound) dropped_.insert(d.key);
      continue;
    }
    icr::v1::CareEvent e;
    e.set_source_system_id(kBrokerSourceSystem);
    e.set_source_organisation(options_.organisation);
    // Escalations concern the council's discharge work (care setting of the
    // teams they go to); the ICB raises them.
    e.set_care_setting(icr::v1::SOCIAL_CARE);
    e.set_source_message_id(MessageId(d.referral_id, d.kind, d.due));
    e.set_nhs_number(referral.nhs_number());
    SetTimestamp(e.mutable_occurred_at(), d.due);
    e.set_priority(icr::v1::URGENT);
    e.set_place(referral.place());
    if (referral.has_addressee()) *e.mutable_addressee() = referral.addressee();
    auto* esc = e.mutable_escalation();
    esc->set_referral_id(d.referral_id);
    esc->set_kind(d.kind);
    SetTimestamp(esc->mutable_deadline(), d.due);
    esc->set_referral_status(referral.status());
    esc->set_pathway(referral.pathway());
    esc->set_detail(Detail(d.kind));
    std::vector<icr::v1::CareEvent> events;
    events.push_back(std::move(e));
    pending_.fetch_add(1);
    ingest_->Publish(std::move(events), false,
                     [this, key = d.key, referral = d.referral_id](const store::Status& st,
                                         std::vector<store::AppendResult> results) {
                       {
                         std::lock_guard<std::mutex> lock(mu_);
                         in_flight_.erase(key);
                         if (st.ok()) {
                           if (!results.empty() && !results[0].duplicate) {
                             raised_.fetch_add(1);
                           } else {
                             // Raised before, yet the deadline is still kept:
                             // nothing more to raise for it.
                             dropped_.insert(key);
                           }
                         } else if (st.code() == store::StatusCode::kFailedPrecondition) {
                           // The referral moved on: the deadline no longer applies.
                           dropped_.insert(key);
                         } else {
                           // Not ours to drop (a store error, or a bug making
                           // an invalid event): say so, and try again later.
                           std::fprintf(stderr,
                                        "icr-broker: escalation of referral %s not raised: %s\n",
                                        referral.c_str(), st.ToString().c_str());
                         }
                       }
                       pending_.fetch_sub(1);
                     });
  }
  // After raising escalations (or a failed scan), look again after the
  // shortest sleep: more may be due, and a failed publish is retried.
  Arm(!due.empty() || !s.ok() ? 0 : next_due);
}

}  // namespace icr::broker
