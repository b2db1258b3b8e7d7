// RoutingIndex: on random subscriptions and events, the index finds exactly
// the subscriptions a full scan of every filter finds, and examines far
// fewer of them.
#include "broker/routing.h"

#include <gtest/gtest.h>

#include <random>
#include <set>

#include "tests/support/test_support.h"

namespace icr::broker {
namespace {

using icr::testing::TestNhsNumber;

const char* const kOrgs[] = {"RKB", "RLT", "R1A", "M86001", "CCC", "WCC", "RYG"};
const v1::EventType kTypes[] = {v1::ADMISSION, v1::DISCHARGE, v1::DISCHARGE_REFERRAL,
                                v1::PLACEMENT_REQUEST, v1::CARE_ACT_ASSESSMENT, v1::TRANSFER};
const v1::Place kPlaces[] = {v1::COVENTRY, v1::WARWICKSHIRE_NORTH,
                             v1::SOUTH_WARWICKSHIRE};

v1::EventFilter RandomFilter(std::mt19937& rng) {
  v1::EventFilter f;
  auto pick = [&](int n) { return static_cast<int>(rng() % n); };
  // Each condition present with some probability; some filters have none.
  if (pick(6) == 0) f.add_nhs_numbers(TestNhsNumber(pick(200)));
  if (pick(3) == 0) {
    auto* a = f.add_addressees();
    a->set_organisation(kOrgs[pick(7)]);
    if (pick(2)) a->set_team_code("T" + std::to_string(pick(3)));
  }
  if (pick(3) == 0) f.add_source_organisations(kOrgs[pick(7)]);
  for (int i = pick(3); i > 0; --i) f.add_event_types(kTypes[pick(6)]);
  if (pick(4) == 0) f.add_care_settings(static_cast<v1::CareSetting>(1 + pick(4)));
  if (pick(4) == 0) f.add_priorities(static_cast<v1::Priority>(1 + pick(3)));
  return f;
}

v1::CareEvent RandomEvent(std::mt19937& rng) {
  auto pick = [&](int n) { return static_cast<int>(rng() % n); };
  v1::CareEvent e;
  e.set_nhs_number(TestNhsNumber(pick(200)));
  e.set_event_type(kTypes[pick(6)]);
  e.set_source_organisation(kOrgs[pick(7)]);
  e.set_care_setting(static_cast<v1::CareSetting>(1 + pick(4)));
  e.set_priority(static_cast<v1::Priority>(pick(4)));
  if (pick(2)) {
    e.mutable_addressee()->set_organisation(kOrgs[pick(7)]);
    e.mutable_addressee()->set_team_code("T" + std::to_string(pick(3)));
  }
  e.set_place(kPlaces[pick(3)]);
  return e;
}

TEST(RoutingIndexTest, FindsExactlyWhatAFullScanFinds) {
  std::mt19937 rng(20261122);
  RoutingIndex index;
  std::vector<std::shared_ptr<Follower>> followers;
  for (int i = 0; i < 2000; ++i) {
    auto f = std::make_shared<Follower>(CompiledFilter(RandomFilter(rng)), /*start=*/1,
                                        /*capacity=*/1, nullptr);
    followers.push_back(f);
    index.Add(f);
  }
  // Team subscriptions too: a brokerage team (its Place's placement traffic)
  // and a ward team (what is addressed to it).
  for (int i = 0; i < 20; ++i) {
    v1::Team team;
    team.mutable_ref()->set_organisation(kOrgs[i % 7]);
    team.mutable_ref()->set_team_code("T" + std::to_string(i % 3));
    team.set_role(i % 2 ? v1::ROLE_BROKERAGE : v1::ROLE_DISCHARGE);
    team.set_place(kPlaces[i % 3]);
    CompiledFilter filter;
    filter.SetTeam(team, nullptr);
    auto f = std::make_shared<Follower>(filter, 1, 1, nullptr);
    followers.push_back(f);
    index.Add(f);
  }
  // Some leave again.
  for (int i = 0; i < 200; ++i) index.Remove(followers[i * 10].get());
  std::set<const Follower*> removed;
  for (int i = 0; i < 200; ++i) removed.insert(followers[i * 10].get());

  uint64_t scanned = 0;
  uint64_t matches = 0;
  for (uint64_t position = 1; position <= 3000; ++position) {
    auto stored = std::make_shared<store::StoredEvent>();
    stored->position = position;
    stored->event = RandomEvent(rng);
    std::set<const Follower*> want;
    for (const auto& f : followers) {
      if (removed.count(f.get())) continue;
      ++scanned;
      if (f->filter().Match(stored->event)) want.insert(f.get());
    }
    std::set<const Follower*> got;
    index.Match(stored, [&](const std::shared_ptr<Follower>& f) {
      EXPECT_TRUE(got.insert(f.get()).second) << "visited twice at position " << position;
    });
    ASSERT_EQ(got, want) << "position " << position;
    matches += want.size();
  }
  EXPECT_GT(matches, 3000u);  // the random filters do match things
  // The index ran far fewer filters than a scan of every subscription.
  EXPECT_LT(index.candidates() * 4, scanned);
}

TEST(RoutingIndexTest, RespectsEachFollowersStartPosition) {
  RoutingIndex index;
  auto early = std::make_shared<Follower>(CompiledFilter(), 1, 10, nullptr);
  auto late = std::make_shared<Follower>(CompiledFilter(), 5, 10, nullptr);
  index.Add(early);
  index.Add(late);
  auto stored = std::make_shared<store::StoredEvent>();
  stored->position = 3;
  stored->event.set_nhs_number(TestNhsNumber(1));
  std::vector<const Follower*> got;
  index.Match(stored, [&](const std::shared_ptr<Follower>& f) { got.push_back(f.get()); });
  EXPECT_EQ(got, std::vector<const Follower*>{early.get()});
}

TEST(FollowerTest, OverflowsWhenFullAndReportsWhereItStopped) {
  Follower f(CompiledFilter(), 1, /*capacity=*/2, nullptr);
  auto event = [](uint64_t p) {
    auto e = std::make_shared<store::StoredEvent>();
    e->position = p;
    return store::EventPtr(e);
  };
  EXPECT_TRUE(f.Offer(event(1)));
  EXPECT_TRUE(f.Offer(event(2)));
  EXPECT_FALSE(f.Offer(event(3)));
  EXPECT_FALSE(f.Offer(event(4)));  // nothing after an overflow
  uint64_t overflow = 0;
  EXPECT_EQ(f.Take(&overflow)->position, 1u);
  EXPECT_EQ(overflow, 0u);
  EXPECT_EQ(f.Take(&overflow)->position, 2u);
  EXPECT_EQ(f.Take(&overflow), nullptr);
  EXPECT_EQ(overflow, 3u);
}

}  // namespace
}  // namespace icr::broker
