// Tests of the retention sweep (broker/governance/retention.h) on a real
// RocksDB store: review flags events past their retention period, purge
// replaces them with stubs after the review period, legal holds stop the
// purge, and every step is audited. Here rather than in tests/governance
// because it needs only the store (retention.cc is compiled in).
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "broker/governance/retention.h"
#include "store/store.h"
#include "tests/support/test_support.h"
#include "store/timestamp.h"

namespace icr::broker::governance {
namespace {

namespace fs = std::filesystem;
using icr::v1::AuditRecord;
using icr::v1::CareEvent;
using store::EventPtr;
using store::Status;
using store::StatusCode;

constexpr int64_t kSecond = 1000000;
constexpr int64_t kDay = 86400 * kSecond;
constexpr int64_t k2010 = 1267401600;  // 2010-03-01T00:00:00Z, seconds
constexpr int64_t k2024 = 1717200000;  // 2024-06-01T00:00:00Z
constexpr int64_t kNow = 1735689600 * kSecond;  // 2025-01-01T00:00:00Z, micros

using icr::testing::TempDir;
using icr::testing::TestNhsNumber;

CareEvent Admission(const std::string& id, const std::string& nhs, int64_t occurred_seconds) {
  CareEvent e;
  e.set_source_system_id("uhcw-epr");
  e.set_source_organisation("RKB");
  e.set_care_setting(icr::v1::ACUTE);
  e.set_source_message_id(id);
  e.set_nhs_number(nhs);
  e.mutable_occurred_at()->set_seconds(occurred_seconds);
  e.set_priority(icr::v1::URGENT);
  e.set_event_type(icr::v1::ADMISSION);
  e.set_place(icr::v1::COVENTRY);
  e.mutable_addressee()->set_organisation("CCC");
  e.mutable_addressee()->set_team_code("HSCT-UHCW");
  e.mutable_admission()->set_encounter_id("enc-" + id);
  e.mutable_admission()->mutable_location()->set_site("RKB01");
  return e;
}

Status AppendSync(store::EventStore* store, std::vector<CareEvent> events) {
  auto promise = std::make_shared<std::promise<Status>>();
  auto future = promise->get_future();
  store->AppendAsync(std::move(events), [promise](const Status& s, std::vector<store::AppendResult>) {
    promise->set_value(s);
  });
  return future.get();
}

class RetentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    options_.data_dir = dir_.path() + "/db";
    Status s = store::OpenRocksDbStore(options_, &store_);
    ASSERT_TRUE(s.ok()) << s.ToString();
    who_.set_principal("ig-officer");
    who_.set_role("IG");
    who_.set_organisation("CCC");
    who_.set_channel("icrctl");
    who_.set_detail("ignored");  // only principal/role/organisation/channel are copied
  }

  // People a, b, c; positions 1-6:
  //   1 a 2010, 2 a 2024, 3 b 2010, 4 c 2024, 5 b 2010, 6 a 2010
  void AppendMix() {
    ASSERT_TRUE(AppendSync(store_.get(), {Admission("m1", a_, k2010), Admission("m2", a_, k2024),
                                          Admission("m3", b_, k2010), Admission("m4", c_, k2024),
                                          Admission("m5", b_, k2010), Admission("m6", a_, k2010)})
                    .ok());
  }

  std::vector<AuditRecord> Audit() {
    std::vector<AuditRecord> out;
    Status s = store_->ReadAudit(1, 1000, &out);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }

  bool Flagged(uint64_t position) {
    std::string value;
    return store_->GetState(RetentionFlagKey(position), &value).ok() && !value.empty();
  }

  EventPtr Event(uint64_t position) {
    EventPtr e;
    Status s = store_->Get(position, &e);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return e;
  }

  TempDir dir_;
  store::StoreOptions options_;
  std::unique_ptr<store::EventStore> store_;
  RetentionRules rules_;  // defaults: 8 years (+2 days), 30 days' review
  AuditRecord who_;
  const std::string a_ = TestNhsNumber(0);
  const std::string b_ = TestNhsNumber(1);
  const std::string c_ = TestNhsNumber(2);
};

using ByPerson = std::vector<std::pair<std::string, std::vector<uint64_t>>>;

TEST_F(RetentionTest, ReviewFlagsOnlyEventsPastTheirRetentionAndAuditsPerPerson) {
  AppendMix();
  RetentionReport report;
  Status s = ReviewRetention(store_.get(), rules_, kNow, who_, nullptr, &report);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(report.scanned, 6u);
  EXPECT_EQ(report.newly_flagged, 4u);
  EXPECT_EQ(report.flagged, 4u);
  EXPECT_EQ(report.on_hold, 0u);
  EXPECT_EQ(report.by_person, (ByPerson{{a_, {1, 6}}, {b_, {3, 5}}}));
  for (uint64_t p : {1, 3, 5, 6}) EXPECT_TRUE(Flagged(p)) << p;
  for (uint64_t p : {2, 4}) EXPECT_FALSE(Flagged(p)) << p;
  std::string value;
  ASSERT_TRUE(store_->GetState("retention/flag/00000000000000000001", &value).ok());
  EXPECT_EQ(value, std::to_string(kNow));

  std::vector<AuditRecord> audit = Audit();
  ASSERT_EQ(audit.size(), 2u);  // one per person newly flagged
  EXPECT_EQ(audit[0].action(), icr::v1::RETENTION_FLAGGED);
  EXPECT_EQ(audit[0].nhs_number(), a_);
  EXPECT_EQ(std::vector<uint64_t>(audit[0].positions().begin(), audit[0].positions().end()),
            (std::vector<uint64_t>{1, 6}));
  ASSERT_EQ(audit[0].event_ids_size(), 2);
  EXPECT_EQ(audit[0].event_ids(0), Event(1)->event.event_id());
  EXPECT_EQ(audit[0].principal(), "ig-officer");
  EXPECT_EQ(audit[0].role(), "IG");
  EXPECT_EQ(audit[0].organisation(), "CCC");
  EXPECT_EQ(audit[0].channel(), "icrctl");
  EXPECT_NE(audit[0].detail(), "ignored");
  EXPECT_EQ(audit[1].nhs_number(), b_);

  // A second review flags nothing new and audits nothing.
  s = ReviewRetention(store_.get(), rules_, kNow + kDay, who_, nullptr, &report);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(report.newly_flagged, 0u);
  EXPECT_EQ(report.flagged, 4u);
  EXPECT_TRUE(report.by_person.empty());
  EXPECT_EQ(Audit().size(), 2u);
  ASSERT_TRUE(store_->GetState(RetentionFlagKey(1), &value).ok());
  EXPECT_EQ(value, std::to_string(kNow)) << "the first flag time is kept";
}

TEST_F(RetentionTest, PerTypeRulesApply) {
  AppendMix();
  rules_.seconds_by_type[icr::v1::ADMISSION] = int64_t{100} * 365 * 86400;  // 100 years
  RetentionReport report;
  ASSERT_TRUE(ReviewRetention(store_.get(), rules_, kNow, who_, nullptr, &report).ok());
  EXPECT_EQ(report.newly_flagged, 0u);
  rules_.seconds_by_type[icr::v1::ADMISSION] = 86400;  // one day: all of them
  ASSERT_TRUE(ReviewRetention(store_.get(), rules_, kNow, who_, nullptr, &report).ok());
  EXPECT_EQ(report.newly_flagged, 6u);
}

TEST_F(RetentionTest, PurgeWaitsForTheReviewPeriodThenLeavesStubs) {
  AppendMix();
  RetentionReport report;
  ASSERT_TRUE(ReviewRetention(store_.get(), rules_, kNow, who_, nullptr, &report).ok());
  const EventPtr before = Event(1);

  // Within the review period: nothing purged.
  Status s = PurgeRetention(store_.get(), rules_, kNow + 29 * kDay, who_, &report);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(report.awaiting_review, 4u);
  EXPECT_EQ(report.purged, 0u);
  EXPECT_EQ(Audit().size(), 2u);
  EXPECT_FALSE(Event(1)->event.has_purged_at());

  // After it: stubs.
  const int64_t purge_time = kNow + 31 * kDay;
  s = PurgeRetention(store_.get(), rules_, purge_time, who_, &report);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(report.purged, 4u);
  EXPECT_EQ(report.awaiting_review, 0u);
  EXPECT_EQ(report.held, 0u);
  EXPECT_EQ(report.by_person, (ByPerson{{a_, {1, 6}}, {b_, {3, 5}}}));
  for (uint64_t p : {1, 3, 5, 6}) {
    const EventPtr e = Event(p);
    EXPECT_TRUE(e->event.has_purged_at()) << p;
    EXPECT_EQ(store::ToMicros(e->event.purged_at()), purge_time);
    EXPECT_EQ(e->event.payload_case(), CareEvent::PAYLOAD_NOT_SET) << p;
    EXPECT_FALSE(e->event.has_addressee()) << p;
    EXPECT_FALSE(Flagged(p)) << "flag cleared";
  }
  for (uint64_t p : {2, 4}) EXPECT_FALSE(Event(p)->event.has_purged_at()) << p;
  // The envelope is kept.
  const EventPtr stub_ptr = Event(1);
  const CareEvent& stub = stub_ptr->event;
  EXPECT_EQ(stub.event_id(), before->event.event_id());
  EXPECT_EQ(stub.source_system_id(), "uhcw-epr");
  EXPECT_EQ(stub.source_message_id(), "m1");
  EXPECT_EQ(stub.source_organisation(), "RKB");
  EXPECT_EQ(stub.care_setting(), icr::v1::ACUTE);
  EXPECT_EQ(stub.nhs_number(), a_);
  EXPECT_EQ(stub.occurred_at().seconds(), k2010);
  EXPECT_EQ(store::ToMicros(stub.recorded_at()), store::ToMicros(before->event.recorded_at()));
  EXPECT_EQ(stub.priority(), icr::v1::URGENT);
  EXPECT_EQ(stub.event_type(), icr::v1::ADMISSION);
  EXPECT_EQ(stub.place(), icr::v1::COVENTRY);
  // The person's history still lists the stub in its place.
  std::vector<EventPtr> history;
  ASSERT_TRUE(store_->ReadPatient(a_, 0, 100, &history).ok());
  ASSERT_EQ(history.size(), 3u);
  EXPECT_TRUE(history[0]->event.has_purged_at());
  EXPECT_FALSE(history[1]->event.has_purged_at());

  std::vector<AuditRecord> audit = Audit();
  ASSERT_EQ(audit.size(), 4u);
  EXPECT_EQ(audit[2].action(), icr::v1::RETENTION_PURGED);
  EXPECT_EQ(audit[2].nhs_number(), a_);
  EXPECT_EQ(std::vector<uint64_t>(audit[2].positions().begin(), audit[2].positions().end()),
            (std::vector<uint64_t>{1, 6}));
  EXPECT_EQ(audit[2].event_ids(0), before->event.event_id());
  EXPECT_EQ(audit[3].nhs_number(), b_);
  EXPECT_EQ(audit[3].principal(), "ig-officer");

  // Purged events are not flagged again, and a second purge does nothing.
  ASSERT_TRUE(ReviewRetention(store_.get(), rules_, purge_time, who_, nullptr, &report).ok());
  EXPECT_EQ(report.newly_flagged, 0u);
  EXPECT_EQ(report.flagged, 0u);
  ASSERT_TRUE(PurgeRetention(store_.get(), rules_, purge_time, who_, &report).ok());
  EXPECT_EQ(report.purged, 0u);
  EXPECT_EQ(Audit().size(), 4u);
  store::AuditVerifyResult verify;
  ASSERT_TRUE(store_->VerifyAudit(nullptr, &verify).ok());
  EXPECT_TRUE(verify.intact) << verify.problem;
}

TEST_F(RetentionTest, ALegalHoldStopsThePurgeUntilLifted) {
  AppendMix();
  Status s = SetLegalHold(store_.get(), a_, true, "litigation ref 2025/17", who_);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(OnLegalHold(store_.get(), a_));
  EXPECT_FALSE(OnLegalHold(store_.get(), b_));

  RetentionReport report;
  ASSERT_TRUE(ReviewRetention(store_.get(), rules_, kNow, who_, nullptr, &report).ok());
  EXPECT_EQ(report.newly_flagged, 4u) << "held events are still flagged";
  EXPECT_EQ(report.on_hold, 2u);

  const int64_t later = kNow + 31 * kDay;
  ASSERT_TRUE(PurgeRetention(store_.get(), rules_, later, who_, &report).ok());
  EXPECT_EQ(report.held, 2u);
  EXPECT_EQ(report.purged, 2u);
  EXPECT_EQ(report.by_person, (ByPerson{{b_, {3, 5}}}));
  EXPECT_FALSE(Event(1)->event.has_purged_at());
  EXPECT_FALSE(Event(6)->event.has_purged_at());
  EXPECT_TRUE(Event(3)->event.has_purged_at());
  EXPECT_TRUE(Flagged(1)) << "still flagged while held";

  s = SetLegalHold(store_.get(), a_, false, "", who_);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_FALSE(OnLegalHold(store_.get(), a_));
  ASSERT_TRUE(PurgeRetention(store_.get(), rules_, later, who_, &report).ok());
  EXPECT_EQ(report.held, 0u);
  EXPECT_EQ(report.purged, 2u);
  EXPECT_TRUE(Event(1)->event.has_purged_at());
  EXPECT_TRUE(Event(6)->event.has_purged_at());

  // Audit: hold placed, flagged a, flagged b, purged b, hold lifted, purged a.
  std::vector<AuditRecord> audit = Audit();
  ASSERT_EQ(audit.size(), 6u);
  EXPECT_EQ(audit[0].action(), icr::v1::LEGAL_HOLD_SET);
  EXPECT_EQ(audit[0].nhs_number(), a_);
  EXPECT_EQ(audit[0].detail(), "placed: litigation ref 2025/17");
  EXPECT_EQ(audit[0].principal(), "ig-officer");
  EXPECT_EQ(audit[1].action(), icr::v1::RETENTION_FLAGGED);
  EXPECT_EQ(audit[2].action(), icr::v1::RETENTION_FLAGGED);
  EXPECT_EQ(audit[3].action(), icr::v1::RETENTION_PURGED);
  EXPECT_EQ(audit[3].nhs_number(), b_);
  EXPECT_EQ(audit[4].action(), icr::v1::LEGAL_HOLD_SET);
  EXPECT_EQ(audit[4].detail(), "lifted");
  EXPECT_EQ(audit[5].action(), icr::v1::RETENTION_PURGED);
  EXPECT_EQ(audit[5].nhs_number(), a_);

  // Who saw / touched person a: the hold, flag and purge records.
  std::vector<AuditRecord> about_a;
  ASSERT_TRUE(store_->AuditForPerson(a_, 0, 100, &about_a).ok());
  EXPECT_EQ(about_a.size(), 4u);
}

TEST_F(RetentionTest, ALegalHoldNeedsAReasonAndAnNhsNumber) {
  EXPECT_EQ(SetLegalHold(store_.get(), a_, true, "", who_).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(SetLegalHold(store_.get(), "12345", true, "x", who_).code(),
            StatusCode::kInvalidArgument);
  EXPECT_FALSE(OnLegalHold(store_.get(), a_));
  EXPECT_TRUE(Audit().empty()) << "refused calls are not audited as holds";
}

TEST_F(RetentionTest, ReviewReportsProgressEvery10000Events) {
  std::vector<CareEvent> batch;
  for (int i = 0; i < 20000; ++i) {
    batch.push_back(Admission("bulk-" + std::to_string(i), TestNhsNumber(i % 50),
                              i % 1000 == 0 ? k2010 : k2024));
    if (batch.size() == 2000) {
      ASSERT_TRUE(AppendSync(store_.get(), std::move(batch)).ok());
      batch.clear();
    }
  }
  std::vector<std::pair<uint64_t, uint64_t>> calls;
  RetentionReport report;
  Status s = ReviewRetention(
      store_.get(), rules_, kNow, who_,
      [&](uint64_t scanned, uint64_t last) { calls.emplace_back(scanned, last); }, &report);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(report.scanned, 20000u);
  EXPECT_EQ(report.newly_flagged, 20u);
  EXPECT_EQ(calls, (std::vector<std::pair<uint64_t, uint64_t>>{{10000, 20000}, {20000, 20000}}));
  EXPECT_EQ(Audit().size(), 1u) << "people 0 (i = 0, 1000, ...) only: i % 50 == 0";
}

}  // namespace
}  // namespace icr::broker::governance
