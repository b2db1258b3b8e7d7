// icr_match_bench: the cost of matching committed events to subscriptions
// (issue 5: "matching cost measured with 10,000 subscriptions").
//
// Builds N subscriptions shaped like an ICS's real ones (60% teams receiving
// what is addressed to them, 25% watchers of a few people, 10% one source's
// events of one type, 4% feeds of two event types, 1% broad feeds of a care
// setting's urgent events, plus 5 that want everything), then routes M
// realistic events two ways on one thread:
//   index: RoutingIndex::Match (what the hub does);
//   scan:  CompiledFilter::Match on every subscription (the naive router).
// Reports ns per event, filters run per event, matches per event, and
// checks the two agree on every event.
//
//   icr_match_bench                      # 10,000 subscriptions, 200,000 events
//   icr_match_bench --subscriptions 1000,10000,50000 --events 100000
//   icr_match_bench --smoke              # small, for CI
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "broker/routing.h"
#include "tests/support/test_support.h"

namespace {

using icr::broker::CompiledFilter;
using icr::broker::Follower;
using icr::broker::RoutingIndex;
namespace v1 = icr::v1;

// 60 organisations: trusts, practices, councils, providers.
std::string Org(int i) {
  static const char* kFixed[] = {"RKB", "RLT", "RJC", "R1A", "RYG", "CCC", "WCC"};
  if (i < 7) return kFixed[i];
  char buf[16];
  std::snprintf(buf, sizeof buf, "M86%03d", i);
  return buf;
}

const v1::EventType kTypes[] = {
    v1::ADMISSION,         v1::TRANSFER,          v1::DISCHARGE,
    v1::ED_ATTENDANCE,     v1::MEDICALLY_OPTIMISED, v1::DISCHARGE_REFERRAL,
    v1::PLACEMENT_REQUEST, v1::PLACEMENT_OFFER,   v1::CARE_ACT_ASSESSMENT,
    v1::CARE_PACKAGE_START};
constexpr int kOrgs = 60;
constexpr int kPeople = 500000;  // of the ~909,000 valid test-range numbers

v1::EventFilter MakeFilter(int i, std::mt19937& rng) {
  v1::EventFilter f;
  const int bucket = i % 100;
  if (bucket < 60) {  // a team: what is addressed to it
    auto* a = f.add_addressees();
    a->set_organisation(Org(static_cast<int>(rng() % kOrgs)));
    a->set_team_code("T" + std::to_string(rng() % 20));
  } else if (bucket < 85) {  // a watcher of a few people (e.g. a GP's caseload feed)
    for (int k = 0; k < 3; ++k) f.add_nhs_numbers(icr::testing::TestNhsNumber(rng() % kPeople));
  } else if (bucket < 95) {  // everything from one source, of one type
    f.add_source_organisations(Org(static_cast<int>(rng() % kOrgs)));
    f.add_event_types(kTypes[rng() % 10]);
  } else if (bucket < 99) {  // a feed of two event types (an integration engine)
    f.add_event_types(kTypes[rng() % 10]);
    f.add_event_types(kTypes[rng() % 10]);
  } else {  // broad: urgent events of one care setting
    f.add_care_settings(static_cast<v1::CareSetting>(1 + rng() % 6));
    f.add_priorities(v1::URGENT);
  }
  return f;
}

v1::CareEvent MakeEvent(std::mt19937& rng) {
  v1::CareEvent e;
  e.set_nhs_number(icr::testing::TestNhsNumber(rng() % kPeople));
  e.set_event_type(kTypes[rng() % 10]);
  e.set_source_organisation(Org(static_cast<int>(rng() % kOrgs)));
  e.set_care_setting(static_cast<v1::CareSetting>(1 + rng() % 6));
  e.set_priority(rng() % 4 == 0 ? v1::URGENT : v1::ROUTINE);
  if (rng() % 3 == 0) {
    e.mutable_addressee()->set_organisation(Org(static_cast<int>(rng() % kOrgs)));
    e.mutable_addressee()->set_team_code("T" + std::to_string(rng() % 20));
  }
  e.set_place(static_cast<v1::Place>(1 + rng() % 4));
  return e;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"icr_match_bench: subscription matching cost, index vs scan"};
  std::vector<int> subscriptions = {1000, 10000};
  int events = 200000;
  int everything = 5;
  bool smoke = false;
  app.add_option("--subscriptions", subscriptions, "subscription counts")->delimiter(',');
  app.add_option("--events", events, "events routed per count")->capture_default_str();
  app.add_option("--match-all", everything, "subscriptions with an empty filter")
      ->capture_default_str();
  app.add_flag("--smoke", smoke, "small run for CI");
  CLI11_PARSE(app, argc, argv);
  if (smoke) {
    subscriptions = {2000};
    events = 5000;
  }

  std::printf("| Subscriptions | Index: ns/event | Scan: ns/event | Scan / index | Filters run per event (index) | Matches per event |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|\n");
  bool agree = true;
  for (int n : subscriptions) {
    std::mt19937 rng(42);
    RoutingIndex index;
    std::vector<std::shared_ptr<Follower>> all;
    for (int i = 0; i < n; ++i) {
      v1::EventFilter filter = i < everything ? v1::EventFilter() : MakeFilter(i, rng);
      auto f = std::make_shared<Follower>(CompiledFilter(filter), 1, 1, nullptr);
      all.push_back(f);
      index.Add(f);
    }
    std::vector<icr::store::EventPtr> stream;
    for (int i = 0; i < events; ++i) {
      auto e = std::make_shared<icr::store::StoredEvent>();
      e->position = static_cast<uint64_t>(i + 1);
      e->event = MakeEvent(rng);
      stream.push_back(e);
    }
    using Clock = std::chrono::steady_clock;
    uint64_t index_matches = 0;
    auto t0 = Clock::now();
    for (const auto& e : stream) {
      index.Match(e, [&](const std::shared_ptr<Follower>&) { ++index_matches; });
    }
    auto t1 = Clock::now();
    uint64_t scan_matches = 0;
    for (const auto& e : stream) {
      for (const auto& f : all) scan_matches += f->filter().Match(e->event) ? 1 : 0;
    }
    auto t2 = Clock::now();
    agree = agree && index_matches == scan_matches;
    const double index_ns =
        std::chrono::duration<double, std::nano>(t1 - t0).count() / events;
    const double scan_ns = std::chrono::duration<double, std::nano>(t2 - t1).count() / events;
    std::printf("| %d | %.0f | %.0f | %.0fx | %.1f | %.2f |\n", n, index_ns, scan_ns,
                scan_ns / index_ns, static_cast<double>(index.candidates()) / events,
                static_cast<double>(index_matches) / events);
  }
  if (!agree) {
    std::fprintf(stderr, "icr_match_bench: the index and the scan disagree\n");
    return 1;
  }
  return 0;
}
