#include "adapters/hl7/adt_mapping.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <string_view>

namespace icr::adapters::hl7 {
namespace {

using icr::v1::CareEvent;

constexpr size_t kMaxControlIdChars = 120;  // leaves room for the ":PD1" suffix (limit 128)
constexpr const char* kNhsNumberOid = "2.16.840.1.113883.2.1.4.1";

std::string Upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string Trim(std::string s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) --e;
  return s.substr(b, e - b);
}

bool IsOdsLike(const std::string& s) {
  if (s.size() < 3 || s.size() > 10) return false;
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isalnum(c); });
}

std::string Shown(const std::string& s) {
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < 40; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  }
  return out + (s.size() > 40 ? "...'" : "'");
}

Hl7Error MakeError(int code, std::string segment, int field, std::string text,
                   int component = 0) {
  Hl7Error e;
  e.code = code;
  e.segment = segment;
  e.segment_sequence = segment.empty() ? 0 : 1;
  e.field = field;
  e.repetition = field > 0 ? 1 : 0;
  e.component = component;
  e.text = segment.empty() || field == 0
               ? (segment.empty() ? text : segment + ": " + text)
               : segment + "-" + std::to_string(field) + ": " + text;
  return e;
}

// Parses "SEG-n" into its parts.
bool SplitFieldName(const std::string& name, std::string* segment, int* field) {
  size_t dash = name.find('-');
  if (dash == std::string::npos) return false;
  *segment = name.substr(0, dash);
  *field = std::atoi(name.c_str() + dash + 1);
  return *field > 0;
}

class Mapper {
 public:
  Mapper(const Er7Message& msg, const MappingOptions& options, MappingResult* result)
      : msg_(msg), options_(options), r_(*result) {
    pid_ = msg.FindSegment("PID");
    pv1_ = msg.FindSegment("PV1");
    pv2_ = msg.FindSegment("PV2");
    pd1_ = msg.FindSegment("PD1");
    evn_ = msg.FindSegment("EVN");
    mrg_ = msg.FindSegment("MRG");
  }

  void Run() {
    if (!CheckHeader()) return;
    CareEvent base;
    if (!Envelope(&base)) return;
    CareEvent event = base;
    const std::string& t = r_.trigger;
    bool gp = true;
    if (t == "A01") {
      if (!Require(pv1_, "PV1")) return;
      auto* a = event.mutable_admission();
      a->set_encounter_id(Pv1(19));
      if (Has(pv1_, 3)) *a->mutable_location() = Location(pv1_, 3);
      if (Has(pv1_, 7)) *a->mutable_attending() = Clinician(pv1_, 7);
      a->set_admission_method(AdmissionMethod(Pv1(4)));
    } else if (t == "A02") {
      if (!Require(pv1_, "PV1")) return;
      auto* x = event.mutable_transfer();
      x->set_encounter_id(Pv1(19));
      if (Has(pv1_, 6)) *x->mutable_from() = Location(pv1_, 6);
      if (Has(pv1_, 3)) *x->mutable_to() = Location(pv1_, 3);
    } else if (t == "A03") {
      if (!Require(pv1_, "PV1")) return;
      auto* d = event.mutable_discharge();
      d->set_encounter_id(Pv1(19));
      const std::string code = Trim(Pv1(36));
      if (code.empty()) {
        Fail(AckCode::kAE, MakeError(kErrRequiredFieldMissing, "PV1", 36,
                                     "discharge disposition is required on A03 (it becomes "
                                     "discharge.destination; e.g. 19 = usual place of "
                                     "residence)"));
        return;
      }
      if (code == "98") {
        Fail(AckCode::kAE, MakeError(kErrTableValueNotFound, "PV1", 36,
                                     "discharge disposition 98 means the spell has not "
                                     "finished: not valid on a discharge (A03)"));
        return;
      }
      auto dest = DischargeDestinationFromCode(code);
      if (dest == icr::v1::DISCHARGE_DESTINATION_UNSPECIFIED) {
        Fail(AckCode::kAE,
             MakeError(kErrTableValueNotFound, "PV1", 36,
                       "discharge disposition " + Shown(code) +
                           " is not a known code (NHS Data Dictionary discharge destination, "
                           "e.g. 19 usual place of residence, 54 or 85 care home, 79 died; "
                           "or a DischargeDestination name such as CARE_HOME_NURSING)"));
        return;
      }
      d->set_destination(dest);
      std::string org = Upper(Trim(msg_.GetAt(pv1_, 37, 1, 1)));
      if (!org.empty()) {
        if (!IsOdsLike(org)) {
          Fail(AckCode::kAE, MakeError(kErrDataType, "PV1", 37,
                                       "discharged-to location " + Shown(org) +
                                           " is not an ODS code (3 to 10 letters and digits, "
                                           "e.g. VM1AB for a care home)"));
          return;
        }
        d->set_destination_organisation(org);
      }
    } else if (t == "A04") {
      if (!Require(pv1_, "PV1")) return;
      const std::string patient_class = Upper(Trim(Pv1(2)));
      if (patient_class == "E") {
        auto* ed = event.mutable_ed_attendance();
        ed->set_attendance_id(Pv1(19));
        ed->set_site(msg_.GetAt(pv1_, 3, 1, 4, 1));
        if (pv2_ >= 0) {
          std::string code = msg_.GetAt(pv2_, 3, 1, 1);
          if (!code.empty()) {
            auto* c = ed->mutable_chief_complaint();
            c->set_code(code);
            c->set_display(msg_.GetAt(pv2_, 3, 1, 2));
            c->set_system(CodeSystem(msg_.GetAt(pv2_, 3, 1, 3)));
          }
        }
      } else {
        EncounterUpdate(&event, patient_class);
      }
    } else if (t == "A05") {
      if (!Require(pv1_, "PV1")) return;
      auto* p = event.mutable_pre_admission();
      p->set_encounter_id(Pv1(19));
      if (Has(pv1_, 3)) *p->mutable_location() = Location(pv1_, 3);
      p->set_admission_method(AdmissionMethod(Pv1(4)));
      std::string field = "PV2-8";
      std::string when = pv2_ >= 0 ? msg_.GetAt(pv2_, 8, 1, 1) : "";
      if (when.empty()) {
        field = "PV1-44";
        when = Pv1(44);
      }
      if (!when.empty()) {
        int y, m, d;
        if (auto problem = ParseHl7Date(when, &y, &m, &d); !problem.empty()) {
          std::string seg;
          int f;
          SplitFieldName(field, &seg, &f);
          Fail(AckCode::kAE, MakeError(kErrDataType, seg, f, "expected admission date: " + problem));
          return;
        }
        auto* date = p->mutable_expected_admission_date();
        date->set_year(y);
        date->set_month(m);
        date->set_day(d);
      }
    } else if (t == "A08") {
      if (pv1_ >= 0 && !Pv1(19).empty()) {
        EncounterUpdate(&event, Upper(Trim(Pv1(2))));
      } else if (!Demographics(&event)) {
        return;
      }
    } else if (t == "A11" || t == "A12" || t == "A13") {
      if (!Require(pv1_, "PV1")) return;
      gp = false;
      auto* c = event.mutable_encounter_cancellation();
      c->set_encounter_id(Pv1(19));
      c->set_cancelled_event_type(t == "A11"   ? icr::v1::ADMISSION
                                  : t == "A12" ? icr::v1::TRANSFER
                                               : icr::v1::DISCHARGE);
      if (evn_ >= 0) c->set_reason(msg_.GetAt(evn_, 4, 1, 1));
    } else if (t == "A28" || t == "A31") {
      if (!Demographics(&event)) return;
    } else if (t == "A40") {
      gp = false;
      if (!Require(mrg_, "MRG")) return;
      if (msg_.CountSegments("PID") > 1 || msg_.CountSegments("MRG") > 1) {
        Fail(AckCode::kAE, MakeError(kErrSegmentSequence, "PID", 0,
                                     "A40 with more than one PID/MRG group is not supported: "
                                     "send one merge per message"));
        return;
      }
      int rep = 0;
      std::string retired = FindNhsNumber(mrg_, 1, &rep);
      if (retired.empty()) {
        Fail(AckCode::kAE,
             MakeError(kErrRequiredFieldMissing, "MRG", 1,
                       "no retired NHS number (a repetition with identifier type code NH or "
                       "assigning authority NHS, e.g. 9990000026^^^NHS^NH)"));
        return;
      }
      event.mutable_nhs_number_merge()->set_retired_nhs_number(retired);
    }
    r_.events.push_back(std::move(event));

    if (gp && pd1_ >= 0) {
      std::string practice = msg_.GetAt(pd1_, 3, 1, 10);
      if (practice.empty()) practice = msg_.GetAt(pd1_, 3, 1, 3);
      if (practice.empty()) practice = msg_.GetAt(pd1_, 3, 1, 1);
      practice = Trim(practice);
      if (!practice.empty()) {
        CareEvent g = base;
        g.set_source_message_id(base.source_message_id() + ":PD1");
        g.mutable_gp_registration()->set_practice(practice);
        r_.events.push_back(std::move(g));
      }
    }
  }

 private:
  void Fail(AckCode code, Hl7Error e) {
    r_.ack = code;
    r_.errors.push_back(std::move(e));
  }

  bool Require(int index, const char* segment) {
    if (index >= 0) return true;
    Fail(AckCode::kAE, MakeError(kErrSegmentSequence, segment, 0,
                                 std::string("segment is required for ADT^") + r_.trigger +
                                     " but is missing"));
    return false;
  }

  bool Has(int index, int field) const {
    return index >= 0 && !msg_.RawField(static_cast<size_t>(index), field).empty();
  }
  std::string Pv1(int field, int comp = 1) const {
    return pv1_ >= 0 ? msg_.GetAt(pv1_, field, 1, comp) : std::string();
  }

  bool CheckHeader() {
    const std::string version = Trim(msg_.GetAt(0, 12, 1, 1));
    const std::string type = Upper(Trim(msg_.GetAt(0, 9, 1, 1)));
    std::string trigger = Upper(Trim(msg_.GetAt(0, 9, 1, 2)));
    if (trigger.empty() && evn_ >= 0) trigger = Upper(Trim(msg_.GetAt(evn_, 1)));
    r_.trigger = trigger;
    if (version.empty()) {
      Fail(AckCode::kAR, MakeError(kErrRequiredFieldMissing, "MSH", 12,
                                   "version id is required (2.3, 2.3.1, 2.4, 2.5 or 2.5.1)"));
      return false;
    }
    if (!IsSupportedVersion(version)) {
      Fail(AckCode::kAR, MakeError(kErrUnsupportedVersion, "MSH", 12,
                                   "version " + Shown(version) +
                                       " is not supported (2.3, 2.3.1, 2.4, 2.5 or 2.5.1)"));
      return false;
    }
    if (type.empty()) {
      Fail(AckCode::kAR, MakeError(kErrRequiredFieldMissing, "MSH", 9,
                                   "message type is required (e.g. ADT^A01)", 1));
      return false;
    }
    if (type != "ADT") {
      Fail(AckCode::kAR, MakeError(kErrUnsupportedMessageType, "MSH", 9,
                                   "message type " + Shown(type) +
                                       " is not supported (ADT only)",
                                   1));
      return false;
    }
    if (trigger.empty()) {
      Fail(AckCode::kAR, MakeError(kErrRequiredFieldMissing, "MSH", 9,
                                   "trigger event is required (e.g. ADT^A01)", 2));
      return false;
    }
    const auto& supported = SupportedTriggers();
    if (std::find(supported.begin(), supported.end(), trigger) == supported.end()) {
      std::string list;
      for (const auto& s : supported) list += (list.empty() ? "" : " ") + s;
      Fail(AckCode::kAR, MakeError(kErrUnsupportedEventCode, "MSH", 9,
                                   "trigger event " + Shown(trigger) +
                                       " is not supported (supported: " + list + ")",
                                   2));
      return false;
    }
    const std::string control_id = msg_.GetAt(0, 10);
    if (control_id.empty()) {
      Fail(AckCode::kAR, MakeError(kErrRequiredFieldMissing, "MSH", 10,
                                   "message control id is required (it is the idempotency "
                                   "key of the message)"));
      return false;
    }
    if (control_id.size() > kMaxControlIdChars) {
      Fail(AckCode::kAE, MakeError(kErrDataType, "MSH", 10,
                                   "message control id is " + std::to_string(control_id.size()) +
                                       " characters (at most " +
                                       std::to_string(kMaxControlIdChars) + ")"));
      return false;
    }
    return true;
  }

  bool Envelope(CareEvent* e) {
    std::string app = msg_.GetAt(0, 3, 1, 1);
    if (app.empty()) app = msg_.GetAt(0, 3, 1, 2);
    std::string system;
    for (char c : Trim(app)) {
      unsigned char u = static_cast<unsigned char>(c);
      system += (std::isalnum(u) || c == '.' || c == '_' || c == ':' || c == '-') ? c : '-';
    }
    if (system.size() > 64) system.resize(64);
    if (system.empty()) {
      Fail(AckCode::kAE, MakeError(kErrRequiredFieldMissing, "MSH", 3,
                                   "sending application is required (it becomes "
                                   "source_system_id)"));
      return false;
    }
    const std::string facility = Trim(msg_.GetAt(0, 4, 1, 1));
    if (facility.empty()) {
      Fail(AckCode::kAE, MakeError(kErrRequiredFieldMissing, "MSH", 4,
                                   "sending facility is required: the ODS code of the "
                                   "sending organisation, e.g. RKB"));
      return false;
    }
    e->set_source_system_id(system);
    e->set_source_organisation(facility);
    e->set_source_message_id(msg_.GetAt(0, 10));
    e->set_care_setting(options_.care_setting);
    e->set_priority(icr::v1::ROUTINE);

    if (pid_ < 0) {
      Fail(AckCode::kAE, MakeError(kErrSegmentSequence, "PID", 0,
                                   "segment is required (the patient) but is missing"));
      return false;
    }
    int rep = 0;
    std::string nhs = FindNhsNumber(pid_, 3, &rep);
    if (nhs.empty()) {
      nhs = FindNhsNumber(pid_, 2, &rep);
      if (!nhs.empty()) r_.nhs_number_field = "PID-2";
    }
    if (nhs.empty()) {
      Fail(AckCode::kAE,
           MakeError(kErrRequiredFieldMissing, "PID", 3,
                     "no NHS number: PID-3 needs a repetition with identifier type code NH "
                     "(CX.5) or assigning authority NHS (CX.4), e.g. 9990000018^^^NHS^NH"));
      return false;
    }
    r_.nhs_number_repetition = rep;
    e->set_nhs_number(nhs);

    // occurred_at: EVN-6 (event occurred), the trigger's own time, EVN-2, MSH-7.
    std::vector<std::pair<int, std::pair<int, const char*>>> candidates;  // segment, field, name
    candidates.push_back({evn_, {6, "EVN-6"}});
    if (r_.trigger == "A01") candidates.push_back({pv1_, {44, "PV1-44"}});
    if (r_.trigger == "A03") candidates.push_back({pv1_, {45, "PV1-45"}});
    candidates.push_back({evn_, {2, "EVN-2"}});
    candidates.push_back({0, {7, "MSH-7"}});
    for (const auto& [seg, f] : candidates) {
      if (seg < 0) continue;
      std::string text = Trim(msg_.GetAt(seg, f.first, 1, 1));
      if (text.empty()) continue;
      int64_t seconds = 0;
      int32_t nanos = 0;
      if (auto p = ParseHl7Timestamp(text, options_.assume_london_time, &seconds, &nanos);
          !p.empty()) {
        std::string segment;
        int field;
        SplitFieldName(f.second, &segment, &field);
        Fail(AckCode::kAE, MakeError(kErrDataType, segment, field, p));
        return false;
      }
      r_.occurred_at_field = f.second;
      e->mutable_occurred_at()->set_seconds(seconds);
      e->mutable_occurred_at()->set_nanos(nanos);
      return true;
    }
    Fail(AckCode::kAE, MakeError(kErrRequiredFieldMissing, "MSH", 7,
                                 "date/time of message is required (or EVN-6 / EVN-2)"));
    return false;
  }

  // The NHS number among the CX repetitions of segment `seg` field `field`.
  std::string FindNhsNumber(int seg, int field, int* rep_out) const {
    const int reps = msg_.RepetitionCount(seg, field);
    for (int rep = 1; rep <= reps; ++rep) {
      const std::string type = Upper(Trim(msg_.GetAt(seg, field, rep, 5)));
      const std::string authority = Upper(Trim(msg_.GetAt(seg, field, rep, 4, 1)));
      const std::string oid = Trim(msg_.GetAt(seg, field, rep, 4, 2));
      if (type == "NH" || authority == "NHS" || oid == kNhsNumberOid) {
        std::string id = Trim(msg_.GetAt(seg, field, rep, 1));
        if (id.empty()) continue;
        *rep_out = rep;
        return id;
      }
    }
    return {};
  }

  icr::v1::Location Location(int seg, int field) const {
    icr::v1::Location l;
    l.set_ward(msg_.GetAt(seg, field, 1, 1));
    const std::string room = msg_.GetAt(seg, field, 1, 2);
    const std::string bed = msg_.GetAt(seg, field, 1, 3);
    l.set_bed(room.empty() ? bed : bed.empty() ? room : room + "/" + bed);
    l.set_site(msg_.GetAt(seg, field, 1, 4, 1));
    return l;
  }

  icr::v1::Clinician Clinician(int seg, int field) const {
    icr::v1::Clinician c;
    c.set_professional_id(msg_.GetAt(seg, field, 1, 1));
    std::string name;
    for (const std::string& part : {msg_.GetAt(seg, field, 1, 6), msg_.GetAt(seg, field, 1, 3),
                                    msg_.GetAt(seg, field, 1, 2, 1)}) {
      if (part.empty()) continue;
      if (!name.empty()) name += ' ';
      name += part;
    }
    c.set_name(name);
    return c;
  }

  void EncounterUpdate(CareEvent* event, const std::string& patient_class) const {
    auto* u = event->mutable_encounter_update();
    u->set_encounter_id(Pv1(19));
    if (Has(pv1_, 3)) *u->mutable_location() = Location(pv1_, 3);
    if (Has(pv1_, 7)) *u->mutable_attending() = Clinician(pv1_, 7);
    u->set_patient_class(patient_class);
  }

  bool Demographics(CareEvent* event) {
    auto* d = event->mutable_demographics_update();
    // PID-5: the legal name (XPN.7 = L) if there is one, else the first.
    int name_rep = 1;
    for (int rep = 1; rep <= msg_.RepetitionCount(pid_, 5); ++rep) {
      if (Upper(msg_.GetAt(pid_, 5, rep, 7)) == "L") {
        name_rep = rep;
        break;
      }
    }
    d->set_family_name(Trim(msg_.GetAt(pid_, 5, name_rep, 1, 1)));
    for (int comp : {2, 3}) {  // given name, then second and further given names
      std::string names = msg_.GetAt(pid_, 5, name_rep, comp);
      size_t start = 0;
      while (start < names.size()) {
        size_t end = names.find(' ', start);
        if (end == std::string::npos) end = names.size();
        if (end > start) d->add_given_names(names.substr(start, end - start));
        start = end + 1;
      }
    }
    const std::string birth = Trim(msg_.GetAt(pid_, 7, 1, 1));
    if (!birth.empty()) {
      int y, m, day;
      if (auto p = ParseHl7Date(birth, &y, &m, &day); !p.empty()) {
        Fail(AckCode::kAE, MakeError(kErrDataType, "PID", 7, "date of birth: " + p));
        return false;
      }
      d->mutable_birth_date()->set_year(y);
      d->mutable_birth_date()->set_month(m);
      d->mutable_birth_date()->set_day(day);
    }
    const std::string sex = Upper(Trim(msg_.GetAt(pid_, 8, 1, 1)));
    if (!sex.empty()) {
      static const std::map<std::string, std::string> kSex = {
          {"M", "male"}, {"F", "female"}, {"O", "other"},
          {"A", "other"}, {"U", "unknown"}, {"N", "unknown"}};
      auto it = kSex.find(sex);
      if (it == kSex.end()) {
        Fail(AckCode::kAE, MakeError(kErrTableValueNotFound, "PID", 8,
                                     "administrative sex " + Shown(sex) +
                                         " is not a known code (HL7 table 0001: M F O U A N)"));
        return false;
      }
      d->set_gender(it->second);
    }
    // PID-11: the home address (XAD.7 = H) if there is one, else the first.
    int addr_rep = 1;
    for (int rep = 1; rep <= msg_.RepetitionCount(pid_, 11); ++rep) {
      if (Upper(msg_.GetAt(pid_, 11, rep, 7)) == "H") {
        addr_rep = rep;
        break;
      }
    }
    d->set_postcode(Upper(Trim(msg_.GetAt(pid_, 11, addr_rep, 5))));
    return true;
  }

  static std::string AdmissionMethod(const std::string& raw) {
    const std::string c = Upper(Trim(raw));
    if (c.empty()) return {};
    if (c == "E" || c == "A" || c == "U" || (c.size() == 2 && c[0] == '2')) return "emergency";
    if (c == "C" || c == "R" || c == "EL" || c == "11" || c == "12" || c == "13") {
      return "elective";
    }
    if (c == "L" || c == "31" || c == "32") return "maternity";
    if (c == "N" || c == "82" || c == "83") return "newborn";
    if (c == "81") return "transfer";
    return Trim(raw);
  }

  static std::string CodeSystem(const std::string& s) {
    const std::string u = Upper(s);
    if (u == "SCT" || u == "SNOMED" || u == "SNOMEDCT" || u == "SNM") {
      return "http://snomed.info/sct";
    }
    return s;
  }

  const Er7Message& msg_;
  const MappingOptions& options_;
  MappingResult& r_;
  int pid_ = -1, pv1_ = -1, pv2_ = -1, pd1_ = -1, evn_ = -1, mrg_ = -1;
};

}  // namespace

const std::vector<std::string>& SupportedTriggers() {
  static const std::vector<std::string> kTriggers = {"A01", "A02", "A03", "A04", "A05", "A08",
                                                     "A11", "A12", "A13", "A28", "A31", "A40"};
  return kTriggers;
}

bool IsSupportedVersion(const std::string& v) {
  return v == "2.3" || v == "2.3.1" || v == "2.4" || v == "2.5" || v == "2.5.1";
}

icr::v1::DischargeDestination DischargeDestinationFromCode(const std::string& raw) {
  using namespace icr::v1;
  const std::string code = Upper(Trim(raw));
  static const std::map<std::string, DischargeDestination> kNhsDataDictionary = {
      {"19", USUAL_RESIDENCE},       // usual place of residence
      {"29", OTHER_DESTINATION},     // temporary place of residence
      {"30", OTHER_DESTINATION},     // repatriation from high security psychiatric hospital
      {"37", OTHER_DESTINATION},     // court
      {"38", OTHER_DESTINATION},     // penal establishment or police station
      {"48", OTHER_HOSPITAL},        // high security psychiatric hospital, Scotland
      {"49", OTHER_HOSPITAL},        // NHS high security psychiatric accommodation
      {"50", OTHER_HOSPITAL},        // NHS medium secure unit
      {"51", OTHER_HOSPITAL},        // NHS ward for general patients
      {"52", OTHER_HOSPITAL},        // NHS ward for maternity patients or neonates
      {"53", OTHER_HOSPITAL},        // NHS ward for mental illness / learning disabilities
      {"54", CARE_HOME_NURSING},     // NHS run care home
      {"65", CARE_HOME_RESIDENTIAL}, // local authority residential accommodation
      {"66", OTHER_DESTINATION},     // local authority foster care
      {"79", DIED},                  // patient died or stillbirth
      {"84", OTHER_HOSPITAL},        // non-NHS medium secure unit
      {"85", CARE_HOME_RESIDENTIAL}, // non-NHS run care home
      {"87", OTHER_HOSPITAL},        // non-NHS run hospital
      {"88", HOSPICE},               // non-NHS run hospice
      {"99", OTHER_DESTINATION},     // not known
  };
  if (auto it = kNhsDataDictionary.find(code); it != kNhsDataDictionary.end()) return it->second;
  DischargeDestination d;
  if (DischargeDestination_Parse(code, &d) && d != DISCHARGE_DESTINATION_UNSPECIFIED) return d;
  return DISCHARGE_DESTINATION_UNSPECIFIED;
}

MappingResult MapAdt(const Er7Message& msg, const MappingOptions& options) {
  MappingResult result;
  if (!msg.has_msh()) {
    result.ack = AckCode::kAR;
    result.errors.push_back(MakeError(kErrSegmentSequence, "MSH", 0, "segment is missing"));
    return result;
  }
  Mapper(msg, options, &result).Run();
  if (result.ack != AckCode::kAA) result.events.clear();
  return result;
}

Hl7Error ErrorFromValidation(const std::string& message, const MappingResult& mapped) {
  // "events[1].gp_registration.practice: problem" or "event.nhs_number: problem"
  size_t colon = message.find(": ");
  std::string path = colon == std::string::npos ? std::string() : message.substr(0, colon);
  std::string problem = colon == std::string::npos ? message : message.substr(colon + 2);
  std::string field_path;
  if (size_t dot = path.find('.'); dot != std::string::npos) field_path = path.substr(dot + 1);

  int code = kErrDataType;
  if (problem.find("is required") != std::string::npos) code = kErrRequiredFieldMissing;
  if (problem.find("is not a known") != std::string::npos) code = kErrTableValueNotFound;

  struct Rule {
    const char* prefix;  // a field path, or a suffix starting with '*'
    const char* field;   // "SEG-n", or "" for the occurred_at / nhs_number sources
  };
  static const Rule kRules[] = {
      {"nhs_number_merge.retired_nhs_number", "MRG-1"},
      {"nhs_number", ""},
      {"source_system_id", "MSH-3"},
      {"source_organisation", "MSH-4"},
      {"source_message_id", "MSH-10"},
      {"occurred_at", ""},
      {"gp_registration.practice", "PD1-3"},
      {"discharge.destination_organisation", "PV1-37"},
      {"discharge.destination", "PV1-36"},
      {"transfer.from", "PV1-6"},
      {"transfer.to", "PV1-3"},
      {"ed_attendance.attendance_id", "PV1-19"},
      {"ed_attendance.site", "PV1-3"},
      {"ed_attendance.chief_complaint", "PV2-3"},
      {"pre_admission.expected_admission_date", "PV2-8"},
      {"encounter_cancellation.reason", "EVN-4"},
      {"demographics_update.family_name", "PID-5"},
      {"demographics_update.given_names", "PID-5"},
      {"demographics_update.birth_date", "PID-7"},
      {"demographics_update.gender", "PID-8"},
      {"demographics_update.postcode", "PID-11"},
      {"*.encounter_id", "PV1-19"},
      {"*.location", "PV1-3"},
      {"*.attending", "PV1-7"},
      {"*.admission_method", "PV1-4"},
      {"*.patient_class", "PV1-2"},
  };
  std::string source;
  for (const Rule& rule : kRules) {
    std::string_view p = rule.prefix;
    bool match;
    if (p[0] == '*') {
      p.remove_prefix(1);  // ".encounter_id": after the payload name
      size_t dot = field_path.find('.');
      match = dot != std::string::npos &&
              std::string_view(field_path).substr(dot).substr(0, p.size()) == p;
    } else {
      match = std::string_view(field_path).substr(0, p.size()) == p &&
              (field_path.size() == p.size() || field_path[p.size()] == '.' ||
               field_path[p.size()] == '[');
    }
    if (!match) continue;
    source = rule.field;
    if (source.empty()) {
      source = std::string(rule.prefix) == "nhs_number" ? mapped.nhs_number_field
                                                        : mapped.occurred_at_field;
    }
    break;
  }
  Hl7Error e;
  e.code = code;
  std::string segment;
  int field = 0;
  if (!source.empty() && SplitFieldName(source, &segment, &field)) {
    e.segment = segment;
    e.segment_sequence = 1;
    e.field = field;
    e.repetition = 1;
    if (source == mapped.nhs_number_field && mapped.nhs_number_repetition > 0 &&
        field_path == "nhs_number") {
      e.repetition = mapped.nhs_number_repetition;
    }
    e.text = source + " (" + (field_path.empty() ? path : field_path) + "): " + problem;
  } else if (path == "event" || (path.rfind("events[", 0) == 0 && path.back() == ']')) {
    // About a whole event (its size): the broker's "events[i]" means nothing
    // to an HL7 sender, so the problem is reported as the message's.
    const bool size = problem.find(" bytes per event") != std::string::npos;
    e.text = std::string("message: ") +
             (size ? "the care event mapped from this message is too large: " : "") + problem;
  } else if (!field_path.empty()) {
    // A field no HL7 field is known for: named by its care event field.
    e.text = "message (care event field " + field_path + "): " + problem;
  } else {
    e.text = message;
  }
  return e;
}

}  // namespace icr::adapters::hl7
