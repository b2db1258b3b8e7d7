// `icrctl import` end to end: the real icrctl binary (ICRCTL_BINARY), run
// with posix_spawn, against a broker this test holds in-process on port 0.
// Checks what was stored (GetStatus, GetPatientHistory), the error report,
// the exit codes, a re-run storing nothing, and --dry-run storing nothing.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "adapters/csv/csv_reader.h"
#include "tests/support/test_support.h"

#ifndef ICRCTL_BINARY
#error "ICRCTL_BINARY must name the icrctl binary"
#endif


namespace icr::adapters::csv {
namespace {

namespace fs = std::filesystem;
using icr::testing::TempDir;
using icr::testing::TestBroker;

std::string Fixture(const std::string& name) { return std::string(ICR_CSV_FIXTURES) + "/" + name; }

using CtlRun = icr::testing::ProgramRun;

// Runs the real icrctl with `args`; its output is kept in files in `dir`.
CtlRun Icrctl(const std::vector<std::string>& args, const std::string& dir) {
  std::vector<std::string> argv = {ICRCTL_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  CtlRun run = icr::testing::RunProgram(argv, dir);
  if (!run.start_error.empty()) ADD_FAILURE() << run.start_error;
  return run;
}

std::vector<CsvRecord> ReadCsv(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  CsvReader reader(&in);
  std::vector<CsvRecord> out;
  CsvRecord record;
  std::string error;
  while (true) {
    const CsvReader::Result r = reader.Next(&record, &error);
    if (r == CsvReader::Result::kEnd) break;
    EXPECT_EQ(r, CsvReader::Result::kRecord) << error;
    out.push_back(record);
  }
  return out;
}

class CsvImportE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    broker_ = std::make_unique<TestBroker>(data_.path());
    stub_ = broker_->NewStub();
  }

  // Copies a fixture into the work dir (the error report goes beside it).
  std::string Copy(const std::string& name) {
    const std::string to = work_.path() + "/" + name;
    fs::copy_file(Fixture(name), to, fs::copy_options::overwrite_existing);
    return to;
  }

  CtlRun Import(std::vector<std::string> args) {
    std::vector<std::string> all = {"--broker", broker_->address(), "--timeout", "20", "import"};
    all.insert(all.end(), args.begin(), args.end());
    return Icrctl(all, work_.path());
  }

  uint64_t EventsStored() {
    grpc::ClientContext ctx;
    icr::v1::GetStatusResponse status;
    EXPECT_TRUE(stub_->GetStatus(&ctx, icr::v1::GetStatusRequest(), &status).ok());
    return status.events_stored();
  }

  std::vector<icr::v1::CareEvent> History(const std::string& nhs) {
    grpc::ClientContext ctx;
    icr::v1::GetPatientHistoryRequest request;
    request.set_nhs_number(nhs);
    icr::v1::GetPatientHistoryResponse response;
    EXPECT_TRUE(stub_->GetPatientHistory(&ctx, request, &response).ok());
    return {response.events().begin(), response.events().end()};
  }

  TempDir data_;
  TempDir work_;
  std::unique_ptr<TestBroker> broker_;
  std::unique_ptr<icr::v1::Broker::Stub> stub_;
};

TEST_F(CsvImportE2E, StoresGoodRowsReportsBadOnesAndRerunStoresNothing) {
  const std::string csv = Copy("care_packages.csv");
  const std::string mapping = Fixture("care_packages.mapping.json");
  // Batches of 7: row 18 (rejected by the broker) shares its batch with rows
  // 17 and 19..23, which must still be stored.
  CtlRun run = Import({"--mapping", mapping, "--batch", "7", csv});
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_NE(run.out.find("22 rows read, 20 stored, 0 duplicates, 2 rejected"), std::string::npos)
      << run.out << run.err;
  EXPECT_NE(run.err.find("2 rejected row(s) are in " + csv + ".errors.csv"), std::string::npos)
      << run.err;
  EXPECT_EQ(EventsStored(), 20u);

  const auto first = History("9990000018");
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].event_type(), icr::v1::CARE_PACKAGE_START);
  EXPECT_EQ(first[0].priority(), icr::v1::BULK);
  EXPECT_EQ(first[0].care_setting(), icr::v1::SOCIAL_CARE);
  EXPECT_EQ(first[0].care_package_start().package_id(), "PKG-230100");
  EXPECT_EQ(first[0].care_package_start().service_type(), icr::v1::HOME_SUPPORT);
  EXPECT_EQ(History("9990000174").size(), 1u);  // row 17, before the rejected row
  EXPECT_EQ(History("9990000182").size(), 0u);  // row 18 (its number is mistyped 9990000019)
  EXPECT_EQ(History("9990000190").size(), 1u);  // row 19, after it
  EXPECT_EQ(History("9990000123").size(), 0u);  // row 13: bad start date

  // The error report: exactly the two bad rows, with reasons, as they were.
  const auto original = ReadCsv(csv);
  const auto report = ReadCsv(csv + ".errors.csv");
  ASSERT_EQ(report.size(), 3u);
  EXPECT_EQ(report[0].fields[0], "row");
  EXPECT_EQ(report[0].fields[1], "reason");
  EXPECT_EQ(std::vector<std::string>(report[0].fields.begin() + 2, report[0].fields.end()),
            original[0].fields);
  std::map<std::string, const CsvRecord*> by_row;
  for (size_t i = 1; i < report.size(); ++i) by_row[report[i].fields[0]] = &report[i];
  ASSERT_EQ(by_row.count("13"), 1u);
  ASSERT_EQ(by_row.count("18"), 1u);
  EXPECT_EQ(by_row["13"]->fields[1],
            "column 'Start Date': '31/02/2026' is not a valid date (format %d/%m/%Y)");
  EXPECT_EQ(
      by_row["18"]->fields[1].rfind("column 'NHS Number': rejected by the broker: nhs_number: ", 0),
      0u)
      << by_row["18"]->fields[1];
  EXPECT_NE(by_row["18"]->fields[1].find("Modulus 11"), std::string::npos);
  EXPECT_EQ(std::vector<std::string>(by_row["13"]->fields.begin() + 2, by_row["13"]->fields.end()),
            original[12].fields);
  EXPECT_EQ(std::vector<std::string>(by_row["18"]->fields.begin() + 2, by_row["18"]->fields.end()),
            original[17].fields);

  // The same file again: nothing new is stored, every good row is a duplicate.
  run = Import({"--mapping", mapping, "--batch", "7", csv});
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_NE(run.out.find("22 rows read, 0 stored, 20 duplicates, 2 rejected"), std::string::npos)
      << run.out;
  EXPECT_EQ(EventsStored(), 20u);

  // --json prints the summary as one JSON object.
  run = Import({"--mapping", mapping, csv, "--json"});
  EXPECT_EQ(run.exit_code, 1);
  const auto j = nlohmann::json::parse(run.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << run.out;
  EXPECT_EQ(j["rowsRead"], 22);
  EXPECT_EQ(j["stored"], 0);
  EXPECT_EQ(j["duplicates"], 20);
  EXPECT_EQ(j["rejected"], 2);
  EXPECT_EQ(j["rejectedByMapping"], 1);
  EXPECT_EQ(j["rejectedByBroker"], 1);
  EXPECT_EQ(j["errorReport"], csv + ".errors.csv");
  EXPECT_TRUE(j["elapsedSeconds"].is_number());
  EXPECT_TRUE(j["rowsPerSecond"].is_number());
  EXPECT_EQ(EventsStored(), 20u);
}

TEST_F(CsvImportE2E, DryRunStoresNothing) {
  const std::string csv = Copy("assessments.csv");
  const std::string errors = work_.path() + "/dry.errors.csv";
  CtlRun run = Import(
      {"--mapping", Fixture("assessments.mapping.json"), "--dry-run", "--errors", errors, csv});
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_NE(
      run.out.find("dry run of " + csv + ": 10 rows read, 8 valid (nothing sent), 2 rejected"),
      std::string::npos)
      << run.out;
  EXPECT_EQ(EventsStored(), 0u);
  const auto report = ReadCsv(errors);
  ASSERT_EQ(report.size(), 3u);
  EXPECT_EQ(report[1].fields[0], "6");
  EXPECT_EQ(report[2].fields[0], "9");
  EXPECT_EQ(report[2].fields[1],
            "column 'Assessment ID': is empty, but care_act_assessment.assessment_id is required");

  // Then for real: the assessment id is the message id.
  run = Import({"--mapping", Fixture("assessments.mapping.json"), csv});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_EQ(EventsStored(), 8u);
  const auto events = History("9990000247");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].source_message_id(), "caa:CAA-88100");
  EXPECT_EQ(events[0].addressee().team_code(), "HSCT-UHCW");
}

TEST_F(CsvImportE2E, CleanFileExitsZeroAndLeavesNoErrorReport) {
  const std::string csv = Copy("care_package_ends.csv");
  CtlRun run = Import({"--mapping", Fixture("care_package_ends.mapping.json"), csv});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("4 rows read, 4 stored, 0 duplicates, 0 rejected"), std::string::npos)
      << run.out;
  EXPECT_FALSE(fs::exists(csv + ".errors.csv"));
  EXPECT_EQ(EventsStored(), 4u);
  const auto events = History("9990000085");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].care_package_end().reason(), "Died");
}

TEST_F(CsvImportE2E, ManyBrokerRejectionsInOneBatch) {
  // Every fifth NHS number fails Modulus 11: one batch of 50 is rejected and
  // resent ten times, each time without the row the broker named.
  const std::string csv = work_.path() + "/many.csv";
  {
    std::ofstream out(csv, std::ios::binary);
    out << "NHS Number,Package ID,End Date,End Reason,Last Updated\n";
    for (int i = 0; i < 50; ++i) {
      std::string nhs = icr::testing::TestNhsNumber(100 + i);
      if (i % 5 == 2) nhs[9] = static_cast<char>('0' + (nhs[9] - '0' + 1) % 10);
      out << nhs << ",PKG-" << i << ",01/10/2025,Moved,01/10/2025 10:00\n";
    }
  }
  CtlRun run =
      Import({"--mapping", Fixture("care_package_ends.mapping.json"), "--batch", "50", csv});
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_NE(run.out.find("50 rows read, 40 stored, 0 duplicates, 10 rejected"), std::string::npos)
      << run.out << run.err;
  EXPECT_EQ(EventsStored(), 40u);
  const auto report = ReadCsv(csv + ".errors.csv");
  ASSERT_EQ(report.size(), 11u);
  std::set<std::string> rows;
  for (size_t i = 1; i < report.size(); ++i) {
    rows.insert(report[i].fields[0]);
    EXPECT_NE(report[i].fields[1].find("column 'NHS Number': rejected by the broker"),
              std::string::npos);
  }
  EXPECT_EQ(rows,
            (std::set<std::string>{"4", "9", "14", "19", "24", "29", "34", "39", "44", "49"}));
}

TEST_F(CsvImportE2E, UsageAndMappingErrorsExitTwo) {
  const std::string csv = Copy("care_packages.csv");
  // The mapping names a column the file does not have.
  CtlRun run = Import({"--mapping", Fixture("care_package_ends.mapping.json"), csv});
  EXPECT_EQ(run.exit_code, 2) << run.err;
  EXPECT_NE(run.err.find("fields.care_package_end.end_date: the column 'End Date' is not in the "
                         "file's header"),
            std::string::npos)
      << run.err;
  EXPECT_FALSE(fs::exists(csv + ".errors.csv"));
  // A broken mapping file.
  const std::string bad = work_.path() + "/bad.mapping.json";
  std::ofstream(bad)
      << R"({"event_type": "CARE_PACKAGE_START", "fields": {"nhs_numbr": "NHS Number"}})";
  run = Import({"--mapping", bad, csv});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.err.find("fields.nhs_numbr: CareEvent has no field \"nhs_numbr\""),
            std::string::npos)
      << run.err;
  // No such file; no --mapping; another format.
  run = Import({"--mapping", Fixture("care_packages.mapping.json"), work_.path() + "/none.csv"});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.err.find("cannot open"), std::string::npos);
  EXPECT_EQ(Import({csv}).exit_code, 2);
  EXPECT_EQ(Import({"--format", "xlsx", "--mapping", Fixture("care_packages.mapping.json"), csv})
                .exit_code,
            2);
  EXPECT_EQ(EventsStored(), 0u);
}

TEST_F(CsvImportE2E, UnreachableBrokerExitsOne) {
  const std::string csv = Copy("care_package_ends.csv");
  CtlRun run = Icrctl({"--broker", "127.0.0.1:1", "--timeout", "3", "import", "--mapping",
                       Fixture("care_package_ends.mapping.json"), csv},
                      work_.path());
  EXPECT_EQ(run.exit_code, 1) << run.out << run.err;
  EXPECT_NE(run.err.find("import stopped"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("importing the file again is safe"), std::string::npos) << run.err;
}

}  // namespace
}  // namespace icr::adapters::csv
